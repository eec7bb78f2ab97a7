"""Transient inference failures: retried with backoff, completed once a server is back, failed for good."""

from __future__ import annotations

import time

from rq.job import Job

from tests.jobs.stack import Stack
from tests.media import AUDIO_DIR

JFK = AUDIO_DIR / "jfk.mp3"


def _retries(stack: Stack, job_id: str) -> int:
    return Job.fetch(job_id, connection=stack.redis).number_of_retries or 0


def test_server_down_when_the_job_starts_then_back(stack: Stack) -> None:
    stack.stop_inference()
    stack.start_worker(CLIPTEXT_JOB_RETRIES="30", CLIPTEXT_JOB_RETRY_INTERVALS="1")
    created = stack.create(stack.upload(JFK, "audio/mpeg"))
    deadline = time.monotonic() + 60
    while _retries(stack, created["id"]) < 1:
        assert time.monotonic() < deadline, "the job was not retried"
        time.sleep(0.2)
    assert stack.get(created["id"])["status"] in ("queued", "processing")
    stack.start_inference()
    body = stack.wait(created["id"], timeout=120)
    assert body["status"] == "completed", body
    assert "ask not what your country" in body["text"].lower()


def test_server_down_for_good_fails_with_inference_unavailable(stack: Stack) -> None:
    stack.stop_inference()
    stack.start_worker(CLIPTEXT_JOB_RETRIES="2", CLIPTEXT_JOB_RETRY_INTERVALS="1")
    created = stack.create(stack.upload(JFK, "audio/mpeg"))
    body = stack.wait(created["id"], timeout=90)
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "INFERENCE_UNAVAILABLE"
    assert body["segments"] == []
    assert _retries(stack, created["id"]) == 2
