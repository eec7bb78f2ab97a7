"""Crashes and restarts under load, with REAL processes and a throwaway Redis of this module's own.

- a short chaos run (tests/reliability/chaos.py): 12 jobs while workers are SIGKILLed every few
  seconds, the inference server is killed and restarted once and Redis is killed (data lost) and
  restarted once: every transcription ends completed or failed with a code, none is lost, segments are
  stored once; bench/soak.py runs the same with 50 jobs;
- Redis losing its queues: the transcriptions are enqueued again from the database;
- the same transcription run twice at once (a recovery that requeued a job whose worker was only slow):
  one transcript, stored once, never wiped by the run that lost.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Queue

from tests.jobs.stack import Stack, running
from tests.media import clip_path
from tests.reliability.chaos import CHAOS_ENV, run_chaos
from tests.reliability.pipeline import submit, wait_all
from tests.reliability.redis_server import RedisServer

CHAOS_JOBS = 12
LOGS = Path(tempfile.gettempdir()) / "cliptext-reliability-logs" / "crashes"  # kept for a post-mortem


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """No persistence: a restart loses every queue, the worst case the jobs must survive."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_stack(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, redis_server: RedisServer
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("crash_stack")
    with running(tmp, model_dir, keep_logs=LOGS, redis_url=redis_server.url, **CHAOS_ENV) as stack:
        yield stack


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    yield module_stack
    module_stack.reset_after_test()


def test_jobs_survive_worker_kills_and_inference_and_redis_restarts(
    stack: Stack, redis_server: RedisServer
) -> None:
    report = run_chaos(stack, redis_server, jobs=CHAOS_JOBS, settle_timeout=300)
    print("\n" + "\n".join(report.lines()))
    print("\n".join(report.events))
    assert report.submitted == CHAOS_JOBS
    assert not report.lost, report.lost
    assert not report.duplicated, report.duplicated
    assert not report.wrong_text, report.wrong_text
    assert not report.missing_uploads, report.missing_uploads
    assert report.worker_kills >= 3 and report.inference_restarts == 1 and report.redis_restarts == 1
    assert report.worker_exits == 0, "a worker quit by itself (Redis outage?)"
    failed = {k: v for k, v in report.outcomes.items() if k.startswith("failed")}
    assert all(k.split()[1] in {"INTERNAL", "INFERENCE_UNAVAILABLE", "TIMEOUT"} for k in failed), failed
    assert report.outcomes["completed"] >= CHAOS_JOBS // 2, report.outcomes


def test_transcriptions_whose_jobs_redis_lost_are_enqueued_again(
    stack: Stack, redis_server: RedisServer
) -> None:
    ids = [stack.create(stack.upload(clip_path("hotwords.mp3"), "audio/mpeg"))["id"] for _ in range(3)]
    redis_server.restart(kill=True)  # no persistence: the queue and the jobs are gone
    assert not stack.redis.exists(f"rq:job:{ids[0]}")
    started = time.monotonic()
    stack.start_worker()
    final = wait_all(stack, ids, timeout=120)
    print(f"\n3 orphaned transcriptions enqueued again and completed in {time.monotonic() - started:.1f} s")
    for body in final.values():
        assert body["status"] == "completed", body
        assert "folder" in body["text"].lower()


def test_a_transcription_run_twice_at_once_is_stored_once(stack: Stack) -> None:
    created = submit(stack, clip_path("multilingual.mp3"), "audio/mpeg", "presigned")
    assert created.created, created.body
    transcription_id = created.body["id"]
    # what a recovery sweep does when it takes a slow worker for a dead one: a second job, same work
    Queue("transcriptions", connection=stack.redis).enqueue(
        "jobs.transcribe.run_transcription", transcription_id, job_id=f"{transcription_id}-again"
    )
    stack.start_worker()
    stack.start_worker()
    body = stack.wait(transcription_id, timeout=300)
    time.sleep(3.0)  # the run that lost the race notices at its next write and stops
    body = stack.get(transcription_id)
    rows = stack.segments(transcription_id)
    assert body["status"] == "completed", body
    assert body["segments"], "the completed transcription lost its segments"
    assert [row[0] for row in rows] == list(range(len(body["segments"])))
    assert "".join(s["text"] for s in body["segments"]).strip() == body["text"]
