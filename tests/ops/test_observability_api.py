"""The API's metrics and logs at the edges: made-up HTTP methods, and requests gunicorn refuses itself.

Real gunicorn processes. A client may send any method token (FOOBAR, PROPFIND…): each must not become
a series of its own. Requests gunicorn answers before the app sees them (431, 414, 400) are counted
too, and gunicorn's own log lines follow CLIPTEXT_LOG_FORMAT like every other line.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.jobs.stack import ROOT, Stack, free_port
from tests.ops.test_observability import sample
from tests.processes import stop

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \[")


def raw(port: int, request: bytes) -> str:
    """Send `request` as is; the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        with contextlib.suppress(TimeoutError):
            while chunk := conn.recv(65536):
                data += chunk
    return data.decode(errors="replace").split("\r\n", 1)[0]


def test_made_up_methods_share_one_series(ops_stack: Stack) -> None:
    port = ops_stack.api_port
    url = f"{ops_stack.api_url}/metrics"

    def other() -> float:
        text = requests.get(url, timeout=10).text
        labels = {"endpoint": "unmatched", "method": "other", "status": "405"}
        return sample(text, "cliptext_api_requests_total", **labels)

    before = other()
    methods = ("FOOBAR", "PROPFIND", "XYZZYQ")
    for method in methods:
        status = raw(port, f"{method} /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert " 405 " in status, status
    text = requests.get(url, timeout=10).text
    assert other() == before + len(methods)
    for method in methods:
        assert f'method="{method}"' not in text
    # the methods the API serves keep their own label
    assert ops_stack.http("GET", "/v1/health").ok
    text = requests.get(url, timeout=10).text
    assert sample(text, "cliptext_api_requests_total", endpoint="/v1/health", method="GET", status="200") >= 1


@contextlib.contextmanager
def gunicorn(ops_stack: Stack, tmp_path: Path, log_format: str) -> Iterator[tuple[int, Path]]:
    """The API as the image runs it (`-c python:api.gunicorn_conf`, 2 workers, multiprocess metrics)."""
    port = free_port()
    prometheus = tmp_path / "prometheus"
    prometheus.mkdir()
    log_path = tmp_path / "api.log"
    env = {
        **ops_stack.env,
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
        "CLIPTEXT_LOG_FORMAT": log_format,
    }
    env.pop("GUNICORN_CMD_ARGS", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "api:create_app()"]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code < 500:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield port, log_path
    finally:
        stop(process)


REFUSALS = {
    "431": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "414": b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "400": b"GARBAGE\r\n\r\n",
}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_gunicorn_refusals_are_counted_and_its_lines_follow_the_log_format(
    ops_stack: Stack, tmp_path: Path, log_format: str
) -> None:
    with gunicorn(ops_stack, tmp_path, log_format) as (port, log_path):
        for status, request in REFUSALS.items():
            assert f" {status} " in raw(port, request)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for status in REFUSALS:
            labels = {"endpoint": "gunicorn", "method": "other", "status": status}
            assert sample(text, "cliptext_api_requests_total", **labels) == 1, text
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert lines
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line, gunicorn's own included
        assert all({"ts", "level", "logger", "msg", "request_id"} <= set(e) for e in entries)
        gunicorn_lines = [e for e in entries if e["logger"] == "gunicorn.error"]
        assert any("Starting gunicorn" in e["msg"] for e in gunicorn_lines), lines
        assert any("Booting worker" in e["msg"] for e in gunicorn_lines), lines
        assert any(e["level"] == "WARNING" and "Invalid request" in e["msg"] for e in gunicorn_lines), lines
    else:
        assert all(TEXT_LINE.match(line) for line in lines if not line.startswith((" ", "Traceback"))), lines
        assert any(" INFO gunicorn.error [None]: Starting gunicorn" in line for line in lines), lines
        assert any(" WARNING gunicorn.error [None]: Invalid request" in line for line in lines), lines
