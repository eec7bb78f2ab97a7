"""A worker asked to stop (a deploy's SIGTERM) hands back a job that outlives its stop grace, instead of
being SIGKILLed with it: the job went back to work 90-150 s later, counted as a crash recovery (three
deploys during one long transcription failed it)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import soundfile
from rq import Queue
from rq.job import Job

from tests.jobs.stack import Stack
from tests.media import clip_path, write_wav


def _long_speech(tmp_path: Path, repeats: int = 12) -> Path:
    speech, rate = soundfile.read(clip_path("jfk.flac"), dtype="float32", always_2d=True)
    return write_wav(tmp_path / "long.wav", np.tile(speech.mean(axis=1), repeats), rate)


def test_a_job_outliving_the_stop_grace_goes_back_to_the_front_of_its_queue_at_once(
    stack: Stack, tmp_path: Path
) -> None:
    stopping = stack.start_worker(name="deployed", CLIPTEXT_WORKER_STOP_GRACE="1")
    created = stack.create(stack.upload(_long_speech(tmp_path), "audio/wav"))["id"]
    stack.wait_for_segments(created, stopping)
    origin = stack.job_hash(created)["origin"]
    stopping.process.send_signal(signal.SIGTERM)
    stopping.process.wait(20)  # the grace (1 s), not the rest of a 130 s transcription

    assert f"job {created} still running 1 s after the stop request" in stopping.log(), stopping.log()
    assert stopping.wait_for_line(f"job {created} on {origin} ended: handed_back"), stopping.log()
    job = Job.fetch(created, connection=stack.redis)
    assert job.get_status() == "queued" and "recoveries" not in job.meta, (job.get_status(), job.meta)
    assert Queue(origin, connection=stack.redis).job_ids[:1] == [created]
    waiting = stack.http("GET", f"/v1/transcriptions/{created}").json()
    assert waiting["status"] == "queued" and not waiting.get("segments"), waiting  # not the dead run's

    taking_over = stack.start_worker(name="next")
    body = stack.wait(created, timeout=300)
    assert body["status"] == "completed", taking_over.log()
    assert "And so my fellow Americans" in body["text"]
    indexes = [row[0] for row in stack.segments(created)]
    assert indexes == list(range(len(indexes))), indexes  # the second run's segments, none twice
    assert "requeued" not in taking_over.log()  # not taken for a job that died with its worker


def test_a_second_stop_request_hands_the_job_back_at_once(stack: Stack, tmp_path: Path) -> None:
    """A second SIGTERM (or Ctrl-C) is RQ's cold shutdown: it killed the horse and left the job in the
    started registry, for a recovery counted against the job 90-150 s later."""
    stopping = stack.start_worker(name="impatient", CLIPTEXT_WORKER_STOP_GRACE="120")
    created = stack.create(stack.upload(_long_speech(tmp_path), "audio/wav"))["id"]
    stack.wait_for_segments(created, stopping)
    origin = stack.job_hash(created)["origin"]
    stopping.process.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # RQ takes two signals within 1 s for one request
    stopping.process.send_signal(signal.SIGTERM)
    stopping.process.wait(20)  # neither the 120 s grace nor the rest of a 130 s transcription

    assert f"job {created} stop asked for again (SIGTERM): handed back" in stopping.log(), stopping.log()
    assert stopping.wait_for_line(f"job {created} on {origin} ended: handed_back"), stopping.log()
    job = Job.fetch(created, connection=stack.redis)
    assert job.get_status() == "queued" and "recoveries" not in job.meta, (job.get_status(), job.meta)
    assert Queue(origin, connection=stack.redis).job_ids[:1] == [created]
    assert stack.http("GET", f"/v1/transcriptions/{created}").json()["status"] == "queued"


def test_a_job_ending_within_the_stop_grace_finishes_and_the_worker_exits(stack: Stack) -> None:
    stopping = stack.start_worker(CLIPTEXT_WORKER_STOP_GRACE="120")
    created = stack.create(stack.upload(clip_path("jfk.flac"), "audio/flac"))["id"]
    deadline = time.monotonic() + 60
    while stack.job_hash(created).get("status") != "started":
        assert time.monotonic() < deadline, stopping.log()
        time.sleep(0.05)
    stopping.process.send_signal(signal.SIGTERM)
    stopping.process.wait(60)
    assert stack.wait(created, timeout=10)["status"] == "completed", stopping.log()
    assert "handed back" not in stopping.log()


def test_a_scheduler_process_that_does_not_stop_holds_neither_the_worker_nor_its_job(
    stack: Stack, tmp_path: Path
) -> None:
    """RQ's SIGTERM handler waits for the scheduler process, and the job monitor's alarm can cut that wait
    short: a handback timer started after it never started (once in six runs). At exit the same wait,
    unbounded, held the worker for good when the scheduler did not end (here one stopped with SIGSTOP)."""
    stopping = stack.start_worker(name="stuck-scheduler", CLIPTEXT_WORKER_STOP_GRACE="1")
    created = stack.create(stack.upload(_long_speech(tmp_path), "audio/wav"))["id"]
    stack.wait_for_segments(created, stopping)
    found = re.search(r"Scheduler for .* started with PID (\d+)", stopping.log())
    assert found, stopping.log()
    scheduler = int(found.group(1))
    os.kill(scheduler, signal.SIGSTOP)
    try:
        stopping.process.send_signal(signal.SIGTERM)
        stopping.process.wait(30)  # the scheduler's 5 s, then the grace
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(scheduler, signal.SIGKILL)
    assert f"scheduler process {scheduler} still there after 5 s: killed" in stopping.log(), stopping.log()
    assert stopping.wait_for_line(f"job {created} on "), stopping.log()
    assert "ended: handed_back" in stopping.log(), stopping.log()
    assert Job.fetch(created, connection=stack.redis).get_status() == "queued"
