"""The whole Cliptext stack as REAL processes: inference server, API (gunicorn), RQ workers.

Used by the jobs tests (tests/jobs/conftest.py) and bench/e2e.py: `Stack.launch(tmp, model_dir)`
starts the inference server and the API on ephemeral ports over a tmp SQLite database, data folder
and a dedicated Redis database; workers are started on demand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLIPTEXT_TEST_JOBS_REDIS", "redis://127.0.0.1:6379/5")
START_TIMEOUT = 120.0
FINAL = ("completed", "failed", "canceled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (RQ's work horse runs in its own process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float = 30.0) -> bool:
        """Whether `text` shows in the log within `timeout` s: the worker logs a job's end after the
        job's own last write, which a test waiting on the database sees first."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL for the process and everything it started."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the process and all its descendants at once: a machine that died."""
        pids = [self.process.pid, *descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)
        for pid in pids[1:]:  # reap nothing else: they are not our children, wait for them to vanish
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    model_dir: Path
    inference_port: int
    api_port: int
    api_key: str = ""
    inference_args: tuple[str, ...] = ("--precision", "fp32", "--threads", "1")
    inference: Proc | None = None
    api: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    redis_url: str = REDIS_URL
    redis: redis.Redis | None = None

    def __post_init__(self) -> None:
        if self.redis is None:
            self.redis = redis.Redis.from_url(self.redis_url)

    # processes ----------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.tmp / "logs" / f"{name}-{secrets.token_hex(3)}.log"
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Proc(name, process, log_path)

    @property
    def inference_addr(self) -> str:
        return f"127.0.0.1:{self.inference_port}"

    def start_inference(self, wait: bool = True) -> Proc:
        command = [sys.executable, "-m", "inference.server", "--addr", self.inference_addr]
        command += ["--model-dir", str(self.model_dir), *self.inference_args]
        self.inference = self._spawn("inference", command)
        if wait:
            self.wait_inference_serving()
        return self.inference

    def wait_inference_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.inference_addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.inference is not None and self.inference.alive(), self.inference.log()
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        raise AssertionError(f"inference server not SERVING:\n{self.inference.log()}")

    def stop_inference(self) -> None:
        if self.inference is not None:
            self.inference.stop()
            self.inference = None

    def start_worker(self, name: str | None = None, **env: str) -> Proc:
        command = [sys.executable, "-m", "jobs.worker"] + (["--name", name] if name else [])
        worker = self._spawn("worker", command, env)
        self.workers.append(worker)
        deadline = time.monotonic() + 60
        while "Listening on" not in worker.log() and "listening on" not in worker.log().lower():
            assert worker.alive(), worker.log()
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.05)
        return worker

    def start_api(self) -> None:
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.api_port}"]
        command += ["--workers", "1", "--threads", "8", "api:create_app()"]
        self.api = self._spawn("api", command)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.api.alive(), self.api.log()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api_url}/v1/health", timeout=2).status_code < 500:
                    break
            assert time.monotonic() < deadline, self.api.log()
            time.sleep(0.2)
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "api", "orgs", "create", "Jobs tests"]
            + ["--plan", "enterprise", "--owner", "jobs@example.com", "--rate-limit", "100000"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.api_key = result.stdout.strip().splitlines()[-1]

    def create_org(self, name: str, *options: str) -> str:
        """Another organization (`flask orgs create NAME OPTIONS...`); its owner's API key."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "api", "orgs", "create", name, *options],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip().splitlines()[-1]

    # HTTP -----------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=60, **kwargs)

    def upload(self, path: Path, content_type: str) -> str:
        """Presigned upload: presign, PUT the bytes, complete; the upload id."""
        data = path.read_bytes()
        reply = self.http(
            "POST",
            "/v1/uploads/presigned",
            json={"filename": path.name, "content_type": content_type, "size": len(data)},
        )
        assert reply.status_code == 201, reply.text
        presigned = reply.json()
        put = requests.put(presigned["url"], data=data, headers=presigned["headers"], timeout=60)
        assert put.status_code == 200, put.text
        done = self.http("POST", "/v1/uploads/complete", json={"upload_id": presigned["id"]})
        assert done.status_code == 200, done.text
        return presigned["id"]

    def create(self, upload_id: str, **options: Any) -> dict:
        reply = self.http("POST", "/v1/transcriptions", json={"upload_id": upload_id, **options})
        assert reply.status_code == 202, reply.text
        return reply.json()

    def get(self, transcription_id: str) -> dict:
        reply = self.http("GET", f"/v1/transcriptions/{transcription_id}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    def wait(self, transcription_id: str, until=FINAL, timeout: float = 180.0, poll: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(transcription_id)
            if body["status"] in until:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{transcription_id} still {body['status']} after {timeout} s")
            time.sleep(poll)

    # database / Redis (read-only checks) ------------------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.tmp / "jobs.db", timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_for_segments(self, transcription_id: str, worker: Proc, timeout: float = 120) -> None:
        """Until the job has stored its first segment: it is running, well into its audio."""
        deadline = time.monotonic() + timeout
        while not self.segments(transcription_id):
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.1)

    def segments(self, transcription_id: str) -> list[tuple]:
        return self.query(
            'SELECT s."index", s.start, s."end", s.text FROM segment s JOIN transcription t '
            'ON s.transcription_id = t.id WHERE t.public_id = ? ORDER BY s."index"',
            transcription_id,
        )

    def job_hash(self, job_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(f"rq:job:{job_id}")
        return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def reset_after_test(self) -> None:
        """For the next test of a shared stack: this test's workers stopped, the inference server up."""
        self.stop_workers()
        if self.inference is None or not self.inference.alive():
            self.start_inference()


def launch(
    tmp: Path,
    model_dir: Path,
    inference_args: tuple[str, ...] | None = None,
    redis_url: str = REDIS_URL,
    **extra_env: str,
) -> Stack:
    """Start the inference server and the API (Redis database flushed first); stop with `shutdown`.

    `redis_url` picks another Redis (tests that restart Redis use a throwaway server of their own).
    """
    api_port, inference_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CLIPTEXT_DATA_DIR": str(tmp / "data"),
        "DATABASE_URL": f"sqlite:///{tmp / 'jobs.db'}",
        "REDIS_URL": redis_url,
        "INFERENCE_ADDR": f"127.0.0.1:{inference_port}",
        "CLIPTEXT_MODEL_DIR": str(model_dir),
        "CLIPTEXT_SECRET_KEY": secrets.token_urlsafe(32),
        "CLIPTEXT_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "CLIPTEXT_WEBHOOK_ALLOW_PRIVATE": "1",
        "CLIPTEXT_JOB_RETRIES": "3",
        "CLIPTEXT_JOB_RETRY_INTERVALS": "1,1,2",
        "CLIPTEXT_WORKER_HEARTBEAT": "1",
        "CLIPTEXT_WORKER_HEARTBEAT_GRACE": "3",
        "CLIPTEXT_WORKER_MAINTENANCE": "2",
        "CLIPTEXT_WEBHOOK_RETRIES": "3",
        "CLIPTEXT_WEBHOOK_RETRY_INTERVALS": "1",
        "CLIPTEXT_WEBHOOK_TIMEOUT": "5",
        **extra_env,
    }
    stack = Stack(
        tmp=tmp,
        env=env,
        model_dir=model_dir,
        inference_port=inference_port,
        api_port=api_port,
        redis_url=redis_url,
    )
    if inference_args is not None:
        stack.inference_args = inference_args
    stack.redis.flushdb()
    try:
        stack.start_inference(wait=False)
        stack.start_api()
        stack.wait_inference_serving()
    except BaseException:
        shutdown(stack)
        raise
    return stack


@contextlib.contextmanager
def running(tmp: Path, model_dir: Path, keep_logs: Path | None = None, **launch_args: Any) -> Iterator[Stack]:
    """`launch`, then `shutdown` however the block ends; `keep_logs` receives a copy of the logs after."""
    stack = launch(tmp, model_dir, **launch_args)
    try:
        yield stack
    finally:
        shutdown(stack)
        if keep_logs is not None:
            shutil.copytree(stack.tmp / "logs", keep_logs, dirs_exist_ok=True)


def shutdown(stack: Stack) -> None:
    stack.stop_workers()
    if stack.api is not None:
        stack.api.stop()
    stack.stop_inference()
    stack.redis.flushdb()
    stack.redis.close()
