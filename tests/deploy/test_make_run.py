"""`make run` (cliptext.stack): the README's first command, started and stopped as a newcomer would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
import requests
import rq

from cliptext import local_services
from tests.redis_db import flushed_redis

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/11"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path, api_port: int, inference_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CLIPTEXT_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'cliptext.db'}",
        "CLIPTEXT_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "INFERENCE_ADDR": f"127.0.0.1:{inference_port}",
        "REDIS_URL": REDIS_URL,
        "PYTHONPATH": str(ROOT),
    }


@contextlib.contextmanager
def started_stack(
    tmp_path: Path, api_port: int, inference_port: int, preexec_fn: Callable[[], None] | None = None
) -> Iterator[subprocess.Popen]:
    """`python -m cliptext.stack` in a session of its own, its output on a pipe; killed with its whole
    group at the end if it is still there."""
    stack = subprocess.Popen(
        [sys.executable, "-m", "cliptext.stack"],
        env=_env(tmp_path, api_port, inference_port),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    try:
        yield stack
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(10)
        stack.stdout.close()


def assert_stops_whole(stack: subprocess.Popen, signum: int, ports: tuple[int, ...]) -> None:
    """`signum` to the stack's process group ends it (exit 0), every process it started, and their ports."""
    children = psutil.Process(stack.pid).children(recursive=True)
    assert len(children) >= 3  # inference server, gunicorn and its workers, worker
    os.killpg(stack.pid, signum)
    assert stack.wait(60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    for port in ports:
        assert not local_services.answers("127.0.0.1", port)


def _queues_of_workers(redis_url: str, timeout: float = 60) -> list[list[str]]:
    """The queue names of each RQ worker registered at `redis_url`, once two are (the workers of a stack
    register after the key is printed)."""
    connection = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while True:
        workers = rq.Worker.all(connection=connection)
        if len(workers) >= 2 or time.monotonic() > deadline:
            return [worker.queue_names() for worker in workers]
        time.sleep(0.5)


def test_a_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    """A second `make run` (or anything on the port) used to pass the health check of the stack that
    held it and print a key that stack had never issued."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "cliptext.stack"],
            env=_env(tmp_path, port, _free_port()),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (the API) is already in use" in result.stderr
    assert "CLIPTEXT_PUBLIC_URL" in result.stderr and "Traceback" not in result.stderr
    assert "starting" not in result.stdout and time.monotonic() - started < 30


def test_an_unreachable_remote_redis_is_not_started_here() -> None:
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="nothing answers at 192.0.2.1:6379"),
        local_services.redis("redis://192.0.2.1:6379/0"),
    ):
        pass
    assert time.monotonic() - started < 5  # was a throwaway Redis bound to 192.0.2.1, and 30 s waiting


def test_make_run_serves_on_the_public_url_and_a_closed_terminal_stops_everything(tmp_path: Path) -> None:
    api_port, inference_port = _free_port(), _free_port()
    with flushed_redis(REDIS_URL), started_stack(tmp_path, api_port, inference_port) as stack:
        key, output = None, []
        deadline = time.monotonic() + 240
        while key is None and time.monotonic() < deadline:
            line = stack.stdout.readline()
            assert line, "".join(output)
            output.append(line)
            found = re.search(r"API key:\s+(\S+)", line)
            key = found.group(1) if found else None
        assert key, "".join(output)
        base = f"http://127.0.0.1:{api_port}/v1"
        assert any(base in line for line in output)
        orgs = requests.get(f"{base}/orgs", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert orgs.status_code == 200, orgs.text
        # webhooks have a worker of their own: the other takes one only when no transcription waits
        assert sorted(_queues_of_workers(REDIS_URL)) == [["transcriptions", "webhooks"], ["webhooks"]]
        # the terminal closed: the whole foreground group
        assert_stops_whole(stack, signal.SIGHUP, (api_port, inference_port))
