"""How long a transcription job may take: a base plus a share of the audio's duration.

The API passes `job_timeout(settings, duration)` as RQ's job_timeout when it enqueues; the job gives
its gRPC call a deadline a little shorter, so a stuck server ends as TIMEOUT before RQ kills the job.
RQ's clock runs while the job downloads the audio (S3), so the call gets what the download left of it.
"""

from __future__ import annotations

import time

from cliptext.settings import Settings

# seconds the job keeps for itself after the gRPC deadline (writing the result, the webhook)
_MARGIN_SECONDS = 30


def job_timeout(settings: Settings, duration: float | None) -> int:
    """RQ job_timeout in seconds; an unknown duration counts as the longest audio allowed."""
    seconds = settings.max_audio_seconds if duration is None else min(duration, settings.max_audio_seconds)
    return int(settings.job_timeout_base + settings.job_timeout_per_audio_second * seconds) + _MARGIN_SECONDS


def call_deadline(settings: Settings, duration: float | None, job_timeout_seconds: int | None) -> float:
    """Seconds the gRPC call may take: the duration's budget, always inside the RQ job timeout."""
    budget = job_timeout(settings, duration) - _MARGIN_SECONDS
    if job_timeout_seconds and job_timeout_seconds > 0:
        budget = min(budget, max(1, job_timeout_seconds - _MARGIN_SECONDS))
    return float(budget)


def remaining_deadline(budget: float, since: float, now: float | None = None) -> float | None:
    """What is left of `budget` seconds counted from `since` (time.monotonic, before the download):
    None once it is spent (the job fails TIMEOUT), else at least 1 s (the job's margin covers it)."""
    left = budget - ((time.monotonic() if now is None else now) - since)
    return None if left <= 0 else max(1.0, left)
