"""What the worker says and counts about a job, on a stack of its own (real processes, Redis db 15).

- a work horse SIGKILLed on the attempt after a retry is counted `crashed`, not the previous attempt's
  `retried` (the outcome in the job's meta in Redis is cleared before each fork);
- the worker's own lines about a job (RQ's pick-up line, the killed horse, `ended: …`) and the recovery
  sweep's lines carry the request id of the API request that created it;
- a webhook that fails on its last attempt says so in a WARNING, is counted `gave_up`, and neither the
  logs nor the stored deliveries quote the URL's password, path or query.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from rq.job import Job, JobStatus

from tests.jobs.stack import Proc, Stack, descendants, free_port, running
from tests.media import AUDIO_DIR
from tests.ops.test_observability import sample

REDIS_URL = os.environ.get("CLIPTEXT_TEST_OBS_REDIS", "redis://127.0.0.1:6379/15")
JFK = AUDIO_DIR / "jfk.mp3"


@pytest.fixture(scope="module")
def obs_stack(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Stack]:
    with running(
        tmp_path_factory.mktemp("obs_stack"),
        model_dir,
        redis_url=REDIS_URL,
        CLIPTEXT_LOG_FORMAT="json",
        CLIPTEXT_JOB_RETRIES="2",
        CLIPTEXT_JOB_RETRY_INTERVALS="1",
        CLIPTEXT_WEBHOOK_RETRIES="1",
        CLIPTEXT_WEBHOOK_RETRY_INTERVALS="1",
        CLIPTEXT_WEBHOOK_TIMEOUT="3",
    ) as stack:
        yield stack


def lines(worker: Proc) -> list[dict]:
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]


def jobs_total(port: int, queue: str, outcome: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sample(text, "cliptext_worker_jobs_total", queue=queue, outcome=outcome)


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@contextlib.contextmanager
def black_hole(port: int) -> Iterator[None]:
    """A listener that accepts connections and never answers: a gRPC call to it hangs."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        accepting.join(5)
        for conn in held:
            conn.close()


def horses(worker: Proc) -> list[int]:
    """RQ's work horses below the worker: each leads a process group of its own (os.setpgrp)."""
    found = []
    for pid in descendants(worker.process.pid):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                found.append(pid)
    return found


def test_a_horse_killed_after_a_retry_is_crashed_and_the_job_lines_carry_the_request_id(
    obs_stack: Stack,
) -> None:
    inference_port, metrics_port = free_port(), free_port()
    worker = obs_stack.start_worker(
        INFERENCE_ADDR=f"127.0.0.1:{inference_port}", CLIPTEXT_WORKER_METRICS_PORT=str(metrics_port)
    )
    request_id = f"obs-{secrets.token_hex(6)}"
    reply = obs_stack.http(
        "POST",
        "/v1/transcriptions",
        json={"upload_id": obs_stack.upload(JFK, "audio/mpeg")},
        headers={"X-Request-Id": request_id},
    )
    assert reply.status_code == 202, reply.text
    txn_id = reply.json()["id"]
    try:
        # attempt 1: nothing listens, the job asks for a retry
        wait_until(lambda: jobs_total(metrics_port, "transcriptions", "retried") == 1, 30, "no retry")
        with black_hole(inference_port):  # attempt 2 hangs; its horse is killed before it reports
            job = Job.fetch(txn_id, connection=obs_stack.redis)
            wait_until(
                lambda: job.get_status(refresh=True) == JobStatus.STARTED and horses(worker), 30, "no rerun"
            )
            time.sleep(1.0)
            for pid in horses(worker):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: jobs_total(metrics_port, "transcriptions", "crashed") == 1, 15, worker.log())
            assert jobs_total(metrics_port, "transcriptions", "retried") == 1
            # the maintenance sweep requeues the transcription whose job died
            wait_until(lambda: "job died with its worker, requeued" in worker.log(), 20, worker.log())
        about = [e for e in lines(worker) if txn_id in e["msg"] and not e["msg"].startswith("Worker ")]
        about += [e for e in lines(worker) if e["logger"] == "rq.worker" and txn_id in e["msg"]]

        def carried(needle: str) -> None:
            found = [e for e in about if needle in e["msg"]]
            assert found, (needle, about)
            assert all(e["request_id"] == request_id for e in found), found

        queue = job.origin  # its organization's queue
        carried(f"{queue}: transcription {txn_id}")  # RQ's pick-up line
        carried("Work horse killed")
        carried(f"job {txn_id} on {queue} ended: retried")
        carried(f"job {txn_id} on {queue} ended: crashed")
        carried("job died with its worker, requeued")
        # the worker's lines about no job carry none
        idle = [e for e in lines(worker) if "cleaning registries" in e["msg"]]
        assert idle and all(e["request_id"] is None for e in idle[-1:]), idle
    finally:
        obs_stack.http("DELETE", f"/v1/transcriptions/{txn_id}")
        worker.kill()
        obs_stack.workers.remove(worker)
        # the killed worker's scheduler held the queues' scheduler locks: the next worker's takes them
        for key in obs_stack.redis.scan_iter("rq:scheduler-lock:*"):
            obs_stack.redis.delete(key)


def test_a_webhook_that_gives_up_says_so_and_keeps_the_url_secret(obs_stack: Stack) -> None:
    metrics_port, closed = free_port(), free_port()
    hook = f"http://hookuser:hookpass@127.0.0.1:{closed}/hook/sk_live_PATHSECRET?token=QUERYSECRET"
    worker = obs_stack.start_worker(CLIPTEXT_WORKER_METRICS_PORT=str(metrics_port))
    request_id = f"obs-{secrets.token_hex(6)}"
    try:
        reply = obs_stack.http(
            "POST",
            "/v1/transcriptions",
            json={"upload_id": obs_stack.upload(JFK, "audio/mpeg"), "webhook_url": hook},
            headers={"X-Request-Id": request_id},
        )
        assert reply.status_code == 202, reply.text
        txn_id = reply.json()["id"]
        assert obs_stack.wait(txn_id, timeout=180)["status"] == "completed"
        # attempt 1 fails, the retry (1 s later) fails too: the last one
        wait_until(lambda: jobs_total(metrics_port, "webhooks", "gave_up") == 1, 30, worker.log())
        assert jobs_total(metrics_port, "webhooks", "crashed") == 0
        assert jobs_total(metrics_port, "webhooks", "retried") == 1

        log = worker.log()
        for secret in ("hookpass", "PATHSECRET", "QUERYSECRET", "token="):
            assert secret not in log, [line for line in log.splitlines() if secret in line]
        gave_up = [e for e in lines(worker) if "gave up" in e["msg"]]
        assert len(gave_up) == 1, gave_up
        entry = gave_up[0]
        assert entry["level"] == "WARNING" and entry["logger"] == "jobs.webhooks"
        assert entry["request_id"] == request_id
        assert entry["msg"].startswith(
            f"webhook for {txn_id} gave up after 2 attempts (last: ConnectionError calling "
            f"http://127.0.0.1:{closed}"
        ), entry

        errors = [
            row[0]
            for row in obs_stack.query(
                "SELECT d.error FROM webhook_delivery d JOIN transcription t ON d.transcription_id = t.id "
                "WHERE t.public_id = ? ORDER BY d.attempt",
                txn_id,
            )
        ]
        assert len(errors) == 2, errors
        for error in errors:
            assert f"http://127.0.0.1:{closed}" in error
            assert not any(s in error for s in ("hookpass", "PATHSECRET", "QUERYSECRET", "/hook")), error
    finally:
        worker.stop()
        obs_stack.workers.remove(worker)
