"""Fixtures of the SDK and CLI tests: the REAL API under gunicorn in a subprocess, on a fresh SQLite
database, a fresh data folder, local storage and Redis db 6 (flushed before and after).

No worker or inference server runs here: transcriptions stay `queued`, which is what these tests need.
Organizations and keys are made with the API's own admin command (`flask --app api orgs create`).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from tests.inference.exported_model import stack_model_dir
from tests.media import AUDIO_DIR
from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLIPTEXT_TEST_SDK_REDIS", "redis://127.0.0.1:6379/6")
AUDIO = AUDIO_DIR
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class ApiServer:
    base_url: str
    env: dict[str, str]
    log: Path


@dataclass(frozen=True)
class Org:
    id: str
    key: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flask(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    folder = tmp_path_factory.mktemp("sdk-api")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    inference_addr = f"127.0.0.1:{_free_port()}"
    env = dict(
        os.environ,
        CLIPTEXT_DATA_DIR=str(folder / "data"),
        DATABASE_URL=f"sqlite:///{folder / 'api.db'}",
        REDIS_URL=REDIS_URL,
        STORAGE_URL=f"file://{folder / 'storage'}",
        CLIPTEXT_PUBLIC_URL=base_url,
        INFERENCE_ADDR=inference_addr,
        CLIPTEXT_MODEL_DIR=str(stack_model_dir()),
        CLIPTEXT_SECRET_KEY=secrets.token_urlsafe(32),
        PYTHONUNBUFFERED="1",
    )
    env.pop("CLIPTEXT_API_KEY", None)
    env.pop("CLIPTEXT_BASE_URL", None)
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    _flask(env, "db", "upgrade")
    log = folder / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                f"--bind=127.0.0.1:{port}",
                "--workers=1",
                "--threads=8",
                "--timeout=120",
                "api:create_app()",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            try:
                if requests.get(f"{base_url}/v1/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"API not up in {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.2)
        yield ApiServer(base_url=f"{base_url}/v1", env=env, log=log)
    finally:
        stop(process, timeout=20)
        conn.flushdb()
        conn.close()


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def pipeline(api_server: ApiServer) -> Iterator[ApiServer]:
    """The API plus a REAL inference server (tiny.en, fp32, 1 thread) and one RQ worker, so
    transcriptions complete. Started by the modules that need it and stopped after them, so the other
    tests of the session see transcriptions stay queued."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    folder = api_server.log.parent
    env = api_server.env
    addr = env["INFERENCE_ADDR"]
    server_log, worker_log = folder / "inference.log", folder / "worker.log"
    command = [
        sys.executable,
        "-m",
        "inference.server",
        "--addr",
        addr,
        "--precision",
        "fp32",
        "--threads",
        "1",
    ]
    server = _spawn(command, env, server_log)
    worker = None
    try:
        deadline = time.monotonic() + 120
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert server.poll() is None, server_log.read_text()
                assert time.monotonic() < deadline, f"inference not SERVING:\n{server_log.read_text()}"
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        worker = _spawn([sys.executable, "-m", "jobs.worker"], env, worker_log)
        while "listening on" not in worker_log.read_text().lower():
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline + 60, worker_log.read_text()
            time.sleep(0.1)
        yield api_server
    finally:
        if worker is not None:
            stop(worker)
        stop(server)


@pytest.fixture(scope="session")
def make_org(api_server: ApiServer) -> Callable[..., Org]:
    """make_org(plan="enterprise") -> a new organization and its owner's API key (via the admin CLI)."""

    def make(plan: str = "enterprise", *, rate_limit: int | None = 10_000) -> Org:
        args = ["orgs", "create", f"SDK {plan} {secrets.token_hex(3)}", "--plan", plan]
        args += ["--owner", f"owner-{secrets.token_hex(4)}@example.com"]
        if plan == "enterprise" and rate_limit:
            args += ["--rate-limit", str(rate_limit), "--concurrent-uploads", "50"]
        key = _flask(api_server.env, *args).strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {key}"}
        orgs = requests.get(f"{api_server.base_url}/orgs", headers=headers, timeout=10).json()["data"]
        return Org(id=orgs[0]["id"], key=key)

    return make


@pytest.fixture(scope="session")
def shared_org(make_org: Callable[..., Org]) -> Org:
    """An Enterprise organization with a high rate limit, shared by tests that do not count rows."""
    return make_org("enterprise")


@pytest.fixture
def run_cli(api_server: ApiServer) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli(key, *args, base_url=None) -> the finished `python -m cliptext.cli` (stdout piped)."""

    def run(key: str | None, *args: str, base_url: str | None = None, timeout: float = 120):
        env = dict(os.environ, CLIPTEXT_BASE_URL=base_url or api_server.base_url)
        env.pop("CLIPTEXT_API_KEY", None)
        if key is not None:
            env["CLIPTEXT_API_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "cliptext.cli", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
