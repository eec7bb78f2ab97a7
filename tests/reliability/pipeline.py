"""Helpers of the reliability tests: send files through the real API, watch processes' memory.

`submit` uploads one file (multipart create, or presign + PUT + complete + create) and returns what
the API answered; `RssSampler` follows a process's resident memory from /proc while a test runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from tests.jobs.stack import FINAL, Stack

ALLOWED_FAILURES = {"AUDIO_DECODE_ERROR", "NO_AUDIO_STREAM", "AUDIO_TOO_LONG"}
# refusals at upload time that name what is wrong with the file
ALLOWED_REFUSALS = {"UNSUPPORTED_MEDIA", "VALIDATION_ERROR", "AUDIO_TOO_LONG", "AUDIO_DECODE_ERROR"}


@dataclass
class Submission:
    """What the API said: a created transcription (`body` with its id), or a refusal (`code`)."""

    status: int
    body: dict
    via: str
    unavailable: int = 0  # 503 answers retried before this one

    @property
    def created(self) -> bool:
        return self.status == 202

    @property
    def code(self) -> str | None:
        return (self.body.get("error") or {}).get("code")


def _answer(reply: requests.Response, via: str) -> Submission:
    try:
        body = reply.json()
    except ValueError:
        body = {"error": {"code": f"HTTP {reply.status_code} (not JSON)", "message": reply.text[:200]}}
    return Submission(reply.status_code, body, via)


def submit(
    stack: Stack, path: Path, content_type: str, via: str, api_key: str | None = None, retries_503: int = 0
) -> Submission:
    """Upload `path` and create its transcription; `via` is "multipart" or "presigned".

    A 503 ("retry later") is retried up to `retries_503` times, as a well-behaved client would; the
    answer counts them (`unavailable`).
    """
    for attempt in range(retries_503 + 1):
        answer = _submit_once(stack, path, content_type, via, api_key)
        answer.unavailable = attempt
        if answer.status != 503:
            break
        time.sleep(0.5)
    return answer


def _submit_once(stack: Stack, path: Path, content_type: str, via: str, api_key: str | None) -> Submission:
    headers = {"Authorization": f"Bearer {api_key or stack.api_key}"}
    url = stack.api_url
    if via == "multipart":
        with path.open("rb") as handle:
            reply = requests.post(
                f"{url}/v1/transcriptions",
                headers=headers,
                files={"file": (path.name, handle, content_type)},
                timeout=120,
            )
        return _answer(reply, via)
    data = path.read_bytes()
    meta = {"filename": path.name, "content_type": content_type, "size": len(data)}
    reply = requests.post(f"{url}/v1/uploads/presigned", headers=headers, json=meta, timeout=60)
    if reply.status_code != 201:
        return _answer(reply, via)
    presigned = reply.json()
    put = requests.put(presigned["url"], data=data, headers=presigned["headers"], timeout=120)
    if put.status_code != 200:
        return _answer(put, via)
    done = requests.post(
        f"{url}/v1/uploads/complete", headers=headers, json={"upload_id": presigned["id"]}, timeout=120
    )
    if done.status_code != 200:
        return _answer(done, via)
    reply = requests.post(
        f"{url}/v1/transcriptions", headers=headers, json={"upload_id": presigned["id"]}, timeout=60
    )
    return _answer(reply, via)


def processing_seconds(body: dict) -> float | None:
    """completed_at - started_at of a finished transcription (None when it never started)."""
    if not body.get("started_at") or not body.get("completed_at"):
        return None
    started = datetime.fromisoformat(body["started_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(body["completed_at"].replace("Z", "+00:00"))
    return (ended - started).total_seconds()


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` now, in MiB (VmRSS)."""
    return _status_kb(pid, "VmRSS") / 1024


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


class RssSampler:
    """Samples VmRSS of a process every `interval` s in a thread; `peak_mb` is the largest seen.

    The kernel's own high-water mark (VmHWM) is reset at the start when /proc allows it, and counted
    too, so a spike shorter than the interval is not missed.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.start_mb = rss_mb(pid)
        self.peak_mb = self.start_mb
        self._hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self._hwm_reset = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        with contextlib.suppress(OSError):
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            if self._hwm_reset:
                self.peak_mb = max(self.peak_mb, _status_kb(self.pid, "VmHWM") / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def active_count(stack: Stack) -> int:
    """Transcriptions of the stack's organization still queued or processing (up to 100 each)."""
    total = 0
    for status in ("queued", "processing"):
        reply = stack.http("GET", "/v1/transcriptions", params={"status": status, "limit": 100})
        assert reply.status_code == 200, reply.text
        total += len(reply.json()["data"])
    return total


def wait_all(
    stack: Stack, ids: list[str], timeout: float, poll: float = 0.5, strict: bool = True
) -> dict[str, dict]:
    """Wait until none is queued/processing (two list calls per poll), then their last bodies.

    Past `timeout`, raise (`strict`) or return what there is (the caller reports the stuck ones).
    """
    started = time.monotonic()
    deadline = started + timeout
    next_report = started + 30
    while active := active_count(stack):
        if time.monotonic() > next_report:
            print(f"  ... {active} of {len(ids)} queued/processing after {time.monotonic() - started:.0f} s")
            next_report += 30
        if time.monotonic() > deadline:
            if not strict:
                break
            stuck = {i: body["status"] for i in ids if (body := stack.get(i))["status"] not in FINAL}
            raise AssertionError(f"{len(stuck)} transcriptions not finished after {timeout:.0f} s: {stuck}")
        time.sleep(poll)
    return {transcription_id: stack.get(transcription_id) for transcription_id in ids}
