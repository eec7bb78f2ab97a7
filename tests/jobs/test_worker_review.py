"""The job queue as an operator runs it (helper-56's review): time limits, recovery order, and the
failed jobs deleted transcriptions left in Redis."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import grpc
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry

from cliptext.errors import ErrorCode
from inference.client import InferenceError
from jobs.errors import classify
from tests.jobs.stack import Stack
from tests.media import AUDIO_DIR, noise, write_wav

JFK = AUDIO_DIR / "jfk.mp3"
LONG = AUDIO_DIR / "multilingual.mp3"


def test_a_call_past_its_deadline_is_not_retried() -> None:
    failure = classify(InferenceError(grpc.StatusCode.DEADLINE_EXCEEDED, "", "Deadline Exceeded"))
    assert failure.code == ErrorCode.TIMEOUT and not failure.transient


def test_a_transcription_past_its_time_limit_fails_once_not_after_every_retry(
    stack: Stack, tmp_path: Path
) -> None:
    """The call's deadline is what the audio's duration allows; a retry started the audio over with the
    same deadline (job_retries more runs of the whole budget: 40 h for a 4 h file on a slow engine)."""
    audio = write_wav(tmp_path / "noise.wav", noise(60.0), 16000)
    # a budget of 1 s (no share per audio second): far less than 60 s of noise takes to decode
    worker = stack.start_worker(CLIPTEXT_JOB_TIMEOUT_BASE="1", CLIPTEXT_JOB_TIMEOUT_PER_AUDIO_SECOND="0")
    created = stack.create(stack.upload(audio, "audio/wav"))
    body = stack.wait(created["id"], timeout=120)
    assert body["status"] == "failed" and body["error"]["code"] == "TIMEOUT", body
    assert not Job.fetch(created["id"], connection=stack.redis).number_of_retries, worker.log()
    assert worker.log().count(f"transcription {created['id']}: processing") == 1, worker.log()


def _wait_heartbeat_expired(stack: Stack, job_id: str, timeout: float = 60.0) -> None:
    """Until the started-job entry of `job_id` (its worker is dead) is past its heartbeat's expiry."""
    deadline = time.monotonic() + timeout
    while True:
        registry = StartedJobRegistry(stack.job_hash(job_id)["origin"], connection=stack.redis)
        expired = stack.redis.zrangebyscore(registry.key, 0, time.time())
        if any(member.decode().startswith(job_id) for member in expired):
            return
        assert time.monotonic() < deadline, "the dead worker's job never expired"
        time.sleep(0.2)


def test_a_job_whose_worker_died_runs_again_before_the_jobs_queued_after_it(stack: Stack) -> None:
    """A deploy SIGKILLs a worker past its grace: the job it ran had waited its turn once already, and
    was requeued behind the whole backlog (hours of other organizations' jobs)."""
    first = stack.start_worker(name="stopped-by-a-deploy")
    interrupted = stack.create(stack.upload(LONG, "audio/mpeg"))["id"]
    stack.wait_for_segments(interrupted, first)
    first.kill()
    queued_after = stack.create(stack.upload(JFK, "audio/mpeg"))["id"]
    _wait_heartbeat_expired(stack, interrupted)

    stack.start_worker(name="the-only-one-left")  # its first maintenance recovers the job, then it dequeues
    recovered = stack.wait(interrupted, timeout=240)
    later = stack.wait(queued_after, timeout=240)
    assert recovered["status"] == later["status"] == "completed", (recovered, later)
    started = dict(stack.query("SELECT public_id, started_at FROM transcription"))  # to the microsecond
    assert started[interrupted] < started[queued_after], started
    assert Job.fetch(interrupted, connection=stack.redis).meta.get("recoveries") == 1


def test_the_stopped_job_of_a_transcription_deleted_while_processing_does_not_stay_in_redis(
    stack: Stack,
) -> None:
    """It stayed in the failed registry for its failure_ttl (7 days): a failed job on the dashboard for
    each such delete, and every maintenance looked it up in the database again."""
    worker = stack.start_worker()
    created = stack.create(stack.upload(LONG, "audio/mpeg"))["id"]
    stack.wait_for_segments(created, worker)
    origin = stack.job_hash(created)["origin"]  # its organization's queue
    assert stack.http("DELETE", f"/v1/transcriptions/{created}").status_code == 204
    failed = FailedJobRegistry(origin, connection=stack.redis)
    deadline = time.monotonic() + 60  # the next maintenance: every 2 s in these tests
    while stack.redis.exists(f"rq:job:{created}") or created in failed.get_job_ids():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert worker.wait_for_line(f"job {created} on {origin} ended: stopped"), worker.log()
    assert not stack.redis.exists(f"rq:results:{created}")


def test_a_transcription_deleted_while_its_database_is_busy_is_not_run_again(stack: Stack) -> None:
    """The API stopped the job, then deleted the rows: a worker's maintenance between the two (here: the
    database held by another writer for 5 s, two maintenances) saw the stopped job's transcription still
    `processing`, took the job for one that died with its worker and ran it again."""
    worker = stack.start_worker()
    created = stack.create(stack.upload(LONG, "audio/mpeg"))["id"]
    stack.wait_for_segments(created, worker)
    answers: list[int] = []
    with contextlib.closing(sqlite3.connect(stack.tmp / "jobs.db", timeout=10, isolation_level=None)) as busy:
        busy.execute("BEGIN IMMEDIATE")  # another writer: the DELETE waits for it (busy timeout 10 s)
        deleting = threading.Thread(
            target=lambda: answers.append(stack.http("DELETE", f"/v1/transcriptions/{created}").status_code)
        )
        deleting.start()
        time.sleep(5)
        busy.execute("ROLLBACK")
    deleting.join(timeout=60)
    assert answers == [204], worker.log()
    deadline = time.monotonic() + 60
    while stack.redis.exists(f"rq:job:{created}"):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert "requeued" not in worker.log(), worker.log()
    assert worker.log().count(f"transcription {created}: processing") == 1, worker.log()
