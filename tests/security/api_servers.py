"""Real API server processes for the security tests: gunicorn `api:create_app()` on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_servers(
    count: int, env: dict[str, str], log_dir: Path, threads: int = 25
) -> Iterator[list[str]]:
    """`count` separate gunicorn processes (one gthread worker each, production's gunicorn config) sharing
    `env`; yields base URLs."""
    processes, urls = [], []
    try:
        for i in range(count):
            port = free_port()
            log = open(log_dir / f"gunicorn-{i}.log", "wb")  # noqa: SIM115  (closed with the process)
            command = [
                sys.executable, "-m", "gunicorn", "--config", "python:api.gunicorn_conf",
                "--bind", f"127.0.0.1:{port}", "--workers", "1",
                "--threads", str(threads), "--timeout", "60", "api:create_app()",
            ]  # fmt: skip
            process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append((process, log))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for url, (process, _) in zip(urls, processes, strict=True):
            while True:
                assert process.poll() is None, (log_dir / "gunicorn-*.log", "server exited")
                try:
                    if requests.get(f"{url}/v1/health", timeout=5).status_code == 200:
                        break
                except requests.RequestException:  # not listening yet, or still importing
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.2)
        yield urls
    finally:
        stop(*(process for process, _ in processes), timeout=15)
        for _, log in processes:
            log.close()
