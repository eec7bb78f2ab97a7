"""Jobs submitted while the pipeline is being broken: workers SIGKILLed and restarted every few seconds,
the inference server killed and restarted once, Redis killed (its data lost) and restarted once.

`run_chaos` drives it and returns the figures; tests/reliability/test_crashes.py runs a short one and
bench/soak.py the long one. A client that gets a 5xx or no answer while submitting retries, as a real
one would; what matters is that every transcription the API accepted ends completed or failed with a
code, with its segments stored once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.jobs.stack import FINAL, Proc, Stack
from tests.media import clip_path
from tests.reliability.pipeline import submit
from tests.reliability.redis_server import RedisServer

# what the stack's processes are told for a chaos run: quick heartbeats, sweeps and retries
CHAOS_ENV = {
    "CLIPTEXT_JOB_RETRIES": "20",
    "CLIPTEXT_JOB_RETRY_INTERVALS": "1,2,3",
    "CLIPTEXT_JOB_MAX_RECOVERIES": "10",
    "CLIPTEXT_JOB_ORPHAN_GRACE": "5",
    "CLIPTEXT_WORKER_HEARTBEAT": "1",
    "CLIPTEXT_WORKER_HEARTBEAT_GRACE": "3",
    "CLIPTEXT_WORKER_MAINTENANCE": "2",
}
CLIPS = (("jfk.mp3", "audio/mpeg", "ask not what your country"), ("hotwords.mp3", "audio/mpeg", "folder"))


@dataclass
class ChaosReport:
    submitted: int = 0
    submit_retries: int = 0
    worker_kills: int = 0
    worker_exits: int = 0  # workers that stopped by themselves (restarted, as a supervisor would)
    inference_restarts: int = 0
    redis_restarts: int = 0
    outcomes: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong_text: list[str] = field(default_factory=list)
    missing_uploads: list[str] = field(default_factory=list)
    chaos_seconds: float = 0.0
    settle_seconds: float = 0.0
    events: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"jobs submitted: {self.submitted} (client retries while submitting: {self.submit_retries})",
            f"worker SIGKILLs: {self.worker_kills}, workers that quit by themselves: {self.worker_exits},"
            f" inference restarts: {self.inference_restarts}, Redis restarts: {self.redis_restarts}",
            "outcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items())),
            f"lost (not final): {len(self.lost)}, duplicated segments: {len(self.duplicated)},"
            f" wrong text: {len(self.wrong_text)}, missing uploads: {len(self.missing_uploads)}",
            f"chaos {self.chaos_seconds:.1f} s, then settled in {self.settle_seconds:.1f} s",
        ]


class _Chaos(threading.Thread):
    """Kills a worker every `kill_every` s (and starts another); restarts inference and Redis once each."""

    def __init__(
        self,
        stack: Stack,
        redis_server: RedisServer,
        report: ChaosReport,
        kill_every: float,
        inference_at: float,
        redis_at: float,
        workers: int,
        seed: int,
    ):
        super().__init__(daemon=True)
        self.stack, self.redis_server, self.report = stack, redis_server, report
        self.kill_every, self.inference_at, self.redis_at = kill_every, inference_at, redis_at
        self.workers = workers
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def event(self, text: str) -> None:
        self.report.events.append(f"{time.monotonic() - self.started:6.1f} s  {text}")

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            self._run()
        except BaseException as error:  # reported by the caller
            self.error = error

    def _run(self) -> None:
        next_kill = self.started + self.kill_every
        inference_done = redis_done = False
        while not self.stop_event.wait(0.2):
            now = time.monotonic()
            self.keep_workers()
            if now >= next_kill:
                victim = self.rng.choice(self.stack.workers)
                victim.kill()
                self.stack.workers.remove(victim)
                self.report.worker_kills += 1
                self.event(f"SIGKILL worker {victim.process.pid}")
                self.keep_workers()
                next_kill = now + self.kill_every * self.rng.uniform(0.5, 1.5)
            if not inference_done and now - self.started >= self.inference_at:
                self.stack.inference.kill()
                self.event("SIGKILL inference server")
                time.sleep(1.0)
                self.stack.start_inference()
                self.report.inference_restarts += 1
                self.event("inference server SERVING again")
                inference_done = True
            if not redis_done and now - self.started >= self.redis_at:
                self.redis_server.restart(kill=True, down_seconds=2.0)
                self.report.redis_restarts += 1
                self.event("Redis SIGKILLed and restarted (its data lost)")
                redis_done = True

    def keep_workers(self) -> None:
        """Play the supervisor: a worker that quit is replaced, and the pool kept at `workers`."""
        for worker in list(self.stack.workers):
            if not worker.alive():
                self.stack.workers.remove(worker)
                self.report.worker_exits += 1
                self.event(f"worker {worker.process.pid} quit by itself (rc {worker.process.returncode})")
        while len(self.stack.workers) < self.workers:
            _start_worker(self.stack)


def _start_worker(stack: Stack) -> Proc:
    for attempt in itertools.count():
        try:
            return stack.start_worker()
        except AssertionError:  # Redis down while it started: a supervisor would try again
            if attempt >= 20:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _submit_until_accepted(stack: Stack, path: Path, content_type: str, via: str, report: ChaosReport) -> str:
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = submit(stack, path, content_type, via)
            if answer.created:
                return answer.body["id"]
            assert answer.status >= 500 or answer.status == 429, (answer.status, answer.body)
        except requests.RequestException:
            pass
        report.submit_retries += 1
        assert time.monotonic() < deadline, "the API did not accept the upload for 120 s"
        time.sleep(0.5)


def run_chaos(
    stack: Stack,
    redis_server: RedisServer,
    jobs: int,
    workers: int = 2,
    submit_every: float = 1.0,
    kill_every: float = 4.0,
    inference_at: float = 6.0,
    redis_at: float = 12.0,
    settle_timeout: float = 600.0,
    seed: int = 0,
    min_kills: int = 3,
) -> ChaosReport:
    """Submit `jobs` transcriptions during the chaos, stop it, let the stack settle; the figures."""
    report = ChaosReport()
    for _ in range(workers):
        _start_worker(stack)
    chaos = _Chaos(stack, redis_server, report, kill_every, inference_at, redis_at, workers, seed)
    chaos.start()
    expected: dict[str, str] = {}
    try:
        for index in range(jobs):
            name, content_type, words = CLIPS[index % len(CLIPS)]
            via = "multipart" if index % 2 else "presigned"
            expected[_submit_until_accepted(stack, clip_path(name), content_type, via, report)] = words
            report.submitted += 1
            time.sleep(submit_every)
        # the chaos goes on until both restarts happened and enough workers were killed
        while chaos.is_alive() and (
            report.redis_restarts < 1 or report.inference_restarts < 1 or report.worker_kills < min_kills
        ):
            time.sleep(0.2)
    finally:
        chaos.stop_event.set()
        chaos.join()
    report.chaos_seconds = time.monotonic() - chaos.started
    if chaos.error is not None:
        raise chaos.error
    chaos.keep_workers()
    settle_started = time.monotonic()
    final = _settle(stack, list(expected), settle_timeout, chaos)
    report.settle_seconds = time.monotonic() - settle_started
    _check(stack, final, expected, report)
    return report


def _settle(stack: Stack, ids: list[str], timeout: float, chaos: _Chaos) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        chaos.keep_workers()
        bodies = {i: stack.get(i) for i in ids}
        if all(b["status"] in FINAL for b in bodies.values()) or time.monotonic() > deadline:
            return bodies
        time.sleep(1.0)


def _check(stack: Stack, final: dict[str, dict], expected: dict[str, str], report: ChaosReport) -> None:
    for transcription_id, body in final.items():
        status = body["status"]
        report.outcomes[status if status != "failed" else f"failed {body['error']['code']}"] += 1
        if status not in FINAL:
            report.lost.append(f"{transcription_id} ({status})")
            continue
        rows = stack.query(
            'SELECT s."index", count(*) FROM segment s JOIN transcription t ON s.transcription_id = t.id'
            ' WHERE t.public_id = ? GROUP BY s."index" ORDER BY s."index"',
            transcription_id,
        )
        if any(count != 1 for _, count in rows) or [i for i, _ in rows] != list(range(len(body["segments"]))):
            report.duplicated.append(f"{transcription_id}: {rows} for {len(body['segments'])} segments")
        if status == "completed":
            joined = "".join(s["text"] for s in body["segments"]).strip()
            if expected[transcription_id] not in body["text"].lower() or joined != body["text"]:
                report.wrong_text.append(f"{transcription_id}: {body['text']!r} / segments {joined!r}")
        upload = stack.query(
            "SELECT u.status, u.storage_key FROM upload u JOIN transcription t ON t.upload_id = u.id"
            " WHERE t.public_id = ?",
            transcription_id,
        )
        if not upload or upload[0][0] != "completed" or not _stored(stack, upload[0][1]):
            report.missing_uploads.append(f"{transcription_id}: {upload}")


def _stored(stack: Stack, key: str) -> bool:
    return (Path(stack.env["CLIPTEXT_DATA_DIR"]) / "storage" / key).exists()
