"""The transcription job: stream a stored upload through the inference servers, store what comes back.

`run_transcription(transcription_id)` is what the API enqueues (job id = the transcription's public
id). It moves the transcription to `processing`, streams the audio over gRPC (a channel made here,
in the work horse, never inherited), upserts each segment as it arrives, and ends `completed` or
`failed`. Transient failures (no server, servers busy) return an rq.Retry with backoff until
settings.job_retries attempts are spent; audio errors and TIMEOUT fail at once (jobs.errors). A
transcription canceled or deleted meanwhile stops the job at its next write, and whatever it stored
is removed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import redis
from rq import Retry, get_current_job
from rq.timeouts import JobTimeoutException

from api.db import db
from api.queue import final_channel, job_request_id
from api.storage import open_storage
from cliptext.errors import ErrorCode
from cliptext.jsonlog import request_id_var
from cliptext.settings import Settings
from inference.client import Progress, Summary, TranscriberClient
from inference.types import Segment, TranscribeOptions
from jobs import metrics
from jobs import transcript_store as store
from jobs.errors import Failure, classify
from jobs.timeouts import call_deadline, remaining_deadline
from jobs.webhooks import enqueue_webhook

log = logging.getLogger(__name__)

COMPLETED_EVENT = "transcription.completed"
FAILED_EVENT = "transcription.failed"
_DOWNLOAD_TOOK_ALL = "fetching the audio from storage took all of the transcription's time limit"


class Canceled(Exception):
    """The transcription left `processing` (canceled, deleted, or taken over by a newer run)."""


def engine_options(stored: dict) -> TranscribeOptions:
    """The engine's options from those the API stored. Whisper knows languages, not regions: the API
    takes "pt-BR" (a BCP 47 tag), the engine "pt"."""
    language = (stored.get("language") or "").split("-")[0].lower()
    return TranscribeOptions(
        language=language or None,
        initial_prompt=stored.get("prompt") or None,
        word_timestamps=bool(stored.get("word_timestamps")),
    )


def _stream(
    settings: Settings, started: store.Started, path: Path, deadline: float, request_id: str
) -> tuple[str, Summary]:
    """Send the audio, store segments as they arrive; (full text, summary).

    The server follows each segment with a Progress event, so a segment is written together with
    the progress it brings (one write per segment).
    """
    texts: list[str] = []
    pending: Segment | None = None
    summary: Summary | None = None

    def flush(progress: float | None) -> None:
        nonlocal pending
        if pending is not None:
            if not store.save_segment(started, len(texts), pending, progress):
                raise Canceled
            texts.append(pending.text)
            pending = None

    with TranscriberClient(
        settings.inference_addr, keepalive_seconds=settings.inference_keepalive_seconds
    ) as client:
        events = client.transcribe(
            path, engine_options(started.options), request_id=request_id, timeout=deadline
        )
        try:
            for event in events:
                if isinstance(event, Segment):
                    flush(None)
                    pending = event
                elif isinstance(event, Progress):
                    share = (
                        min(1.0, event.seconds_done / event.total_seconds) if event.total_seconds else None
                    )
                    if pending is not None:
                        flush(share)
                    elif not store.save_progress(started, share or 0.0):
                        raise Canceled
                elif isinstance(event, Summary):
                    summary = event
            flush(None)
        finally:
            events.close()  # cancels the call on the server when we stop early
    if summary is None:
        raise RuntimeError("the inference stream ended without a summary")
    return "".join(texts).strip(), summary


def _attempts_so_far() -> int:
    job = get_current_job()
    return (job.number_of_retries or 0) if job is not None else 0


def _notify(settings: Settings, started: store.Started, event: str) -> None:
    if not started.webhook_url:
        return
    job = get_current_job()
    connection = job.connection if job is not None else redis.Redis.from_url(settings.redis_url)
    try:
        enqueue_webhook(connection, settings, started.public_id, event)
    except redis.RedisError:
        log.exception("could not enqueue the webhook of %s", started.public_id)


def _announce(settings: Settings, public_id: str, status: str) -> None:
    """Wake whoever waits on this transcription (the OpenAI-compatible endpoint) at once."""
    job = get_current_job()
    connection = job.connection if job is not None else redis.Redis.from_url(settings.redis_url)
    try:
        connection.publish(final_channel(public_id), status)
    except redis.RedisError:  # waiters also poll the database
        log.warning("could not announce the end of %s", public_id)


def _fail(settings: Settings, started: store.Started, failure: Failure) -> None:
    log.warning("transcription %s failed: %s %s", started.public_id, failure.code, failure.message)
    metrics.report("failed")
    if store.fail(started.id, failure.code, failure.message, run=started):
        _announce(settings, started.public_id, "failed")
        _notify(settings, started, FAILED_EVENT)


def run_transcription(transcription_id: str) -> Retry | None:
    """Transcribe one queued transcription (the RQ job; see the module docstring)."""
    settings = Settings.from_env()
    store.ensure_db(settings)
    request_id = job_request_id(get_current_job(), transcription_id)
    request_id_var.set(request_id)  # this work horse serves this one request: every log line names it
    with db.connection_context():
        started = store.start(transcription_id)
        if started is None:
            log.info("transcription %s is not queued any more: nothing to do", transcription_id)
            metrics.report("skipped")
            return None
        log.info("transcription %s: processing", transcription_id)
        if not started.storage_key:
            _fail(settings, started, Failure(ErrorCode.UPLOAD_MISSING, "the upload is gone", False))
            return None
        job = get_current_job()
        budget = call_deadline(settings, started.duration, job.timeout if job is not None else None)
        copy_began = time.monotonic()
        try:
            with open_storage(settings.storage_url).local_copy(started.storage_key) as path:
                if not Path(path).exists():
                    _fail(settings, started, Failure(ErrorCode.UPLOAD_MISSING, "the audio is gone", False))
                    return None
                deadline = remaining_deadline(budget, copy_began)  # the download (S3) spent its share
                if deadline is None:
                    _fail(settings, started, Failure(ErrorCode.TIMEOUT, _DOWNLOAD_TOOK_ALL, False))
                    return None
                text, summary = _stream(settings, started, Path(path), deadline, request_id)
        except Canceled:
            log.info("transcription %s was canceled while processing", transcription_id)
            store.discard(started)
            metrics.report("canceled")
            return None
        except JobTimeoutException as error:
            _fail(settings, started, classify(error))
            raise
        except Exception as error:  # every failure ends in a stored error code, never a stuck row
            failure = classify(error)
            if failure.code == ErrorCode.INTERNAL:
                log.exception("transcription %s: unexpected error", transcription_id)
            attempts = _attempts_so_far()
            if failure.transient and attempts < settings.job_retries and store.back_to_queue(started):
                log.warning(
                    "transcription %s: %s (%s), retry %d of %d",
                    transcription_id,
                    failure.code,
                    failure.message,
                    attempts + 1,
                    settings.job_retries,
                )
                intervals = list(settings.job_retry_intervals) or [0]
                metrics.report("retried")
                return Retry(max=settings.job_retries, interval=intervals)
            _fail(settings, started, failure)
            return None
        if store.complete(started, text, summary.duration, summary.language):
            log.info(
                "transcription %s completed: %.1f s of audio, %d segments",
                transcription_id,
                summary.duration,
                summary.segments,
            )
            metrics.report("completed", summary.duration)
            _announce(settings, started.public_id, "completed")
            _notify(settings, started, COMPLETED_EVENT)
        else:
            store.discard(started)
            metrics.report("canceled")
        return None
