"""Kept-alive connections survive under api/gunicorn_conf.py: a client reusing one gets its answer.

gunicorn's default keep-alive is 2 s. Found in review with the openai SDK (one long-lived client): right
after another client's upload was answered 401 (bad key, body not read), its next transcription hung
2.0 s, then the connection was reset, with no server log line. gunicorn 27's gthread worker closes such
a connection with a linger of up to 2 s (waiting for the client to close) on the thread that also
watches the kept-alive connections; a connection whose 2 s ran out meanwhile was closed with the
request it had just been sent unread. A client idle past 2 s (httpx reuses connections idle up to 5 s)
met a closed connection as well.

Real gunicorn started as the image starts it (`-c python:api.gunicorn_conf`), one worker so that both
clients share it, and a plain http.client connection, which reuses its socket without checking it first.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.deploy.test_gunicorn_conf import ROOT, app_env, free_port
from tests.processes import stop

# Past gunicorn's 64 KiB drain of an unread body, so the connection is closed after the answer; and
# small enough that the server has read all of it then: the linger waits for the client alone.
UNREAD_BODY = b"x" * 100_000


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("keepalive")
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "api:create_app()"]
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        env = app_env(tmp_path)
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_health(server, port, log_path)
            yield port
        finally:
            stop(server)


def _wait_for_health(server: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log_path.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)


def _health(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/v1/health")
    response = connection.getresponse()
    response.read()
    return response.status


def _refused_upload(port: int) -> socket.socket:
    """An OpenAI-style upload with a bad key, sent whole; answered 401 with its body unread. The socket
    stays open, as in a client's pool: the answer said keep-alive."""
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ck_bad\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(UNREAD_BODY)}\r\n\r\n"
    )
    upload = socket.create_connection(("127.0.0.1", port), timeout=30)
    upload.sendall(head.encode() + UNREAD_BODY)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = upload.recv(65536)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    return upload


def test_a_kept_alive_connection_is_served_after_another_clients_refused_upload(port: int) -> None:
    good = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert _health(good) == 200
        upload = _refused_upload(port)
        try:
            time.sleep(0.5)  # the worker is now closing the upload's connection (up to 2 s)
            # with gunicorn's 2 s keep-alive: ConnectionResetError after 2 s, the request never served
            assert _health(good) == 200
        finally:
            upload.close()
    finally:
        good.close()


def test_a_connection_idle_past_two_seconds_is_reused(port: int) -> None:
    """httpx (the openai SDK) reuses a connection idle up to 5 s; gunicorn's 2 s had closed it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert _health(connection) == 200
        time.sleep(4.5)
        # with gunicorn's 2 s keep-alive: RemoteDisconnected (the server had closed the connection)
        assert _health(connection) == 200
    finally:
        connection.close()


def test_refused_uploads_stall_no_other_request(port: int) -> None:
    """gunicorn 27 lingered over each such close on its event loop, up to 2 s, one after another: three
    refused uploads held every other request of the worker for 6 s, a new connection's included (a
    client sending them on purpose kept the worker frozen). api.gunicorn_worker lingers off that loop."""
    uploads = [_refused_upload(port) for _ in range(3)]
    try:
        time.sleep(0.3)  # the worker is closing them now, all three lingering for the client
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            started = time.monotonic()
            assert _health(other) == 200
            waited = time.monotonic() - started
        finally:
            other.close()
        # about 4 ms here; 1.7 to 5.7 s with gunicorn's own worker
        assert waited < 1.0, f"a new connection waited {waited:.1f} s behind the refused uploads' closes"
    finally:
        for upload in uploads:
            upload.close()


def test_lingering_closes_are_bounded() -> None:
    """Each lingering close holds a socket (a file descriptor) outside gunicorn's worker_connections:
    past MAX_LINGERING at once, a connection is closed at once, so a flood cannot exhaust descriptors."""
    from concurrent.futures import ThreadPoolExecutor

    from api.gunicorn_worker import MAX_LINGERING, _Lingering

    release = threading.Event()
    closed: list[str] = []
    lingering = _Lingering(ThreadPoolExecutor(4))

    def close(graceful: bool = False) -> None:
        if graceful:
            release.wait(10)  # a client that never closes its end: the linger lasts
        closed.append("graceful" if graceful else "at once")

    closers = [lingering.closer(close) for _ in range(MAX_LINGERING + 3)]
    for closer in closers:
        closer(True)
    assert closed == ["at once"] * 3  # the first MAX_LINGERING linger (4 running, the rest queued)
    closers[0](False)  # an ordinary close never lingers
    assert closed[-1] == "at once"
    release.set()
    lingering._executor.shutdown(wait=True)
    assert closed.count("graceful") == MAX_LINGERING
    assert lingering._take()  # the count went back down: the next close lingers again
