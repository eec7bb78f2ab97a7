"""The SDK and CLI where a request is slow, lost, rate-limited or unanswered: the real API, with real
servers of our own on free ports standing in for a proxy that loses an answer or an API that says
nothing, and the API's SQLite write lock held to make a create outlive the client's timeout."""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import json
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from cliptext.cli import EXIT_TIMEOUT, EXIT_UNREACHABLE
from cliptext.sdk import Client, CliptextError
from tests.sdk.conftest import AUDIO, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]
Serve = Callable[[type[BaseHTTPRequestHandler]], ThreadingHTTPServer]


@pytest.fixture
def client(api_server: ApiServer, shared_org: Org) -> Iterator[Client]:
    with Client(api_key=shared_org.key, base_url=api_server.base_url, timeout=30) as sdk:
        yield sdk


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(handler) -> a running ThreadingHTTPServer on a free port, stopped after the test."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def silent_api() -> Iterator[str]:
    """A base URL whose connections are accepted (by the kernel's backlog) and never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_port}/v1"


@contextmanager
def _database_busy(api_server: ApiServer, seconds: float) -> Iterator[None]:
    """Hold the API's SQLite write lock for `seconds`: a create waits for it (busy timeout 10 s), so it
    outlives a short client timeout while its Idempotency-Key stays pending."""
    path = api_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    lock = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        lock.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(seconds, lock.execute, ("COMMIT",))
        timer.start()
        try:
            yield
        finally:
            timer.join()
    finally:
        lock.close()


def _spend_the_minute(api_server: ApiServer, key: str) -> float:
    """Use up the organization's requests of this minute; returns the first 429's Retry-After."""
    for _ in range(30):
        response = requests.get(
            f"{api_server.base_url}/orgs", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        if response.status_code == 429:
            return float(response.headers["Retry-After"])
    raise AssertionError("the organization was never rate limited")


# -- create: the 409 of a first attempt still in progress --------------------------------------------


def test_create_retries_while_its_first_attempt_is_in_progress(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    """The first POST outlives the 1 s timeout; the retry under the same key meets 409 "in progress",
    backs off, and gets the first attempt's answer replayed: one transcription, and its id."""
    org = make_org("enterprise")
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    upload = sdk.upload(AUDIO / "jfk.mp3")
    slow = Client(api_key=org.key, base_url=api_server.base_url, timeout=1.0)
    answers: list[int] = []
    slow._session.hooks["response"].append(lambda r, *a, **k: answers.append(r.status_code))
    with _database_busy(api_server, 2.5):
        created = slow.create_transcription(upload.id)
    assert answers[0] == 409 and answers[-1] == 202, answers
    assert [t.id for t in sdk.list_transcriptions()] == [created.id]


def test_create_that_gives_up_names_its_idempotency_key(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    """Out of retries while the first attempt still runs: the error carries the generated key, with
    which the caller learns the id of the transcription that attempt created."""
    org = make_org("enterprise")
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    upload = sdk.upload(AUDIO / "jfk.mp3")
    impatient = Client(api_key=org.key, base_url=api_server.base_url, timeout=1.0, max_retries=1)
    with _database_busy(api_server, 3.0), pytest.raises(CliptextError) as caught:
        impatient.create_transcription(upload.id)
    assert (caught.value.code, caught.value.status) == ("CONFLICT", 409)
    assert "in progress" in caught.value.message
    key = caught.value.details["idempotency_key"]
    created = sdk.create_transcription(upload.id, idempotency_key=key)
    assert [t.id for t in sdk.list_transcriptions()] == [created.id]


# -- wait: the caller's timeout holds ----------------------------------------------------------------


def test_wait_raises_timeout_instead_of_sleeping_past_it(
    api_server: ApiServer, make_org: Callable[..., Org], run_cli: Run
) -> None:
    """Rate limited for the rest of the minute: wait(timeout=2) and `cliptext wait --timeout 2` give
    up at once rather than sleep the Retry-After (no worker runs here: the transcription stays queued)."""
    org = make_org("enterprise", rate_limit=6)
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    created = sdk.create_transcription(file=AUDIO / "jfk.mp3")
    assert _spend_the_minute(api_server, org.key) > 20

    started = time.monotonic()
    with pytest.raises(CliptextError) as caught:
        sdk.wait(created.id, timeout=2)
    assert time.monotonic() - started < 2
    assert (caught.value.code, caught.value.status) == ("TIMEOUT", None)
    assert caught.value.details["id"] == created.id and "RATE_LIMITED" in caught.value.message

    started = time.monotonic()
    waited = run_cli(org.key, "wait", created.id, "--timeout", "2")
    assert waited.returncode == EXIT_TIMEOUT, waited.stderr
    assert "TIMEOUT" in waited.stderr and time.monotonic() - started < 15


def test_cli_transcribe_wait_timeout_holds_when_rate_limited(
    run_cli: Run, make_org: Callable[..., Org]
) -> None:
    """5 a minute: make_org's own request, presign, complete, create and one poll; the next poll's 429
    asks for most of a minute, past --timeout 3."""
    org = make_org("enterprise", rate_limit=5)
    started = time.monotonic()
    done = run_cli(org.key, "transcribe", str(AUDIO / "jfk.mp3"), "--wait", "--timeout", "3")
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "TIMEOUT" in done.stderr and "RATE_LIMITED" in done.stderr
    assert time.monotonic() - started < 20


def test_wait_does_not_wait_on_a_silent_api_past_its_timeout(silent_api: str) -> None:
    sdk = Client(api_key="k", base_url=silent_api, timeout=30)
    started = time.monotonic()
    with pytest.raises(CliptextError) as caught:
        sdk.wait("txn_x", timeout=1)
    assert (caught.value.code, caught.value.status) == ("TIMEOUT", None)
    assert time.monotonic() - started < 3


# -- no answer in time is "unreachable", not a wait timeout --------------------------------------------


def test_no_answer_in_time_is_unreachable(silent_api: str, run_cli: Run) -> None:
    sdk = Client(api_key="k", base_url=silent_api, timeout=0.5, max_retries=0)
    with pytest.raises(CliptextError) as caught:
        sdk.list_orgs()
    assert (caught.value.code, caught.value.status) == ("SERVICE_UNAVAILABLE", None)
    done = run_cli("ck_x", "--timeout", "0.5", "list", base_url=silent_api)
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert "SERVICE_UNAVAILABLE" in done.stderr
    # waiting on an API that refuses connections is unreachable too, whatever the wait's --timeout
    refused = run_cli("ck_x", "wait", "txn_x", "--timeout", "2", base_url="http://127.0.0.1:9/v1")
    assert refused.returncode == EXIT_UNREACHABLE, refused.stderr


# -- delete: a lost answer ---------------------------------------------------------------------------


class _LosesFirstDeleteAnswer(BaseHTTPRequestHandler):
    """A proxy to the API (server.upstream) that forwards every DELETE but closes the connection
    unanswered after the first: the DELETE happened, the client never hears so."""

    def do_DELETE(self) -> None:  # noqa: N802 (http.server's name)
        answer = requests.delete(
            self.server.upstream + self.path,  # type: ignore[attr-defined]
            headers={"Authorization": self.headers["Authorization"]},
            timeout=30,
        )
        statuses: list[int] = self.server.statuses  # type: ignore[attr-defined]
        statuses.append(answer.status_code)
        if len(statuses) == 1:
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: object) -> None:
        pass


def test_delete_whose_answer_was_lost(api_server: ApiServer, shared_org: Org, serve: Serve) -> None:
    direct = Client(api_key=shared_org.key, base_url=api_server.base_url)
    created = direct.create_transcription(file=AUDIO / "jfk.mp3")
    proxy = serve(_LosesFirstDeleteAnswer)
    origin = urlsplit(api_server.base_url)
    proxy.upstream = f"{origin.scheme}://{origin.netloc}"  # type: ignore[attr-defined]
    proxy.statuses = []  # type: ignore[attr-defined]

    Client(api_key=shared_org.key, base_url=_url(proxy)).delete_transcription(created.id)
    assert proxy.statuses == [204, 404], "the retry met the first DELETE's work"  # type: ignore[attr-defined]
    with pytest.raises(CliptextError) as caught:
        direct.get_transcription(created.id)
    assert caught.value.code == "NOT_FOUND"


# -- create from a file object -----------------------------------------------------------------------


def test_create_from_a_file_object_needs_its_name(client: Client) -> None:
    data = (AUDIO / "jfk.mp3").read_bytes()
    sent: list[str] = []
    client._session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request.url))
    with pytest.raises(ValueError, match="filename="):
        client.create_transcription(file=io.BytesIO(data), language="en")
    assert sent == [], "refused before any request"

    created = client.create_transcription(file=io.BytesIO(data), filename="speech.mp3", language="en")
    assert created.status == "queued" and created.upload_id
    with open(AUDIO / "jfk.mp3", "rb") as handle:  # a file opened by path has its name
        assert client.create_transcription(file=handle).status == "queued"


# -- Retry-After as an HTTP-date ---------------------------------------------------------------------


class _RateLimited(BaseHTTPRequestHandler):
    """Every GET is a 429 whose Retry-After is server.retry_after (an HTTP-date here)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"error": {"code": "RATE_LIMITED", "message": "slow down", "details": {}}}).encode()
        self.send_response(429)
        self.send_header("Retry-After", self.server.retry_after)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retry_after_as_an_http_date(serve: Serve) -> None:
    server = serve(_RateLimited)
    sdk = Client(api_key="k", base_url=_url(server), max_retries=0)
    now = dt.datetime.now(dt.UTC)
    for ahead, expected in ((30, 30), (-30, 0)):
        server.retry_after = email.utils.format_datetime(  # type: ignore[attr-defined]
            now + dt.timedelta(seconds=ahead), usegmt=True
        )
        with pytest.raises(CliptextError) as caught:
            sdk.list_orgs()
        assert caught.value.code == "RATE_LIMITED"
        assert caught.value.retry_after == pytest.approx(expected, abs=2)
