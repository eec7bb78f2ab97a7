"""The SDK and CLI as an integrating developer meets them at the edges: a connection lost mid-upload, a
load balancer's 502 between deploys, a page instead of JSON, the request id to quote, a key copied with a
line break, Ctrl-C, -o collisions, a Latin-1 terminal. The real API; a real HTTP proxy of our own on a
free port in front of it where the network has to misbehave."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from cliptext.cli import EXIT_API_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from cliptext.sdk import Client, CliptextError
from tests.sdk.conftest import AUDIO, ROOT, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]

HOP_BY_HOP = {"host", "connection", "proxy-connection", "keep-alive", "content-length", "transfer-encoding"}
PAGE_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class _Proxy(ThreadingHTTPServer):
    """A forward proxy (absolute-form targets, for a Session's `proxies`) and a reverse proxy (paths,
    to `upstream`) to the API. It records (method, path, outcome) and misbehaves once per entry of
    `mischief`: {(method, path prefix): "drop_mid_body" | "lose_answer" | "gateway_502"}."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.mischief: dict[tuple[str, str], str] = {}
        self.log: list[tuple[str, str, object]] = []
        self.seen = threading.Event()  # set on the first request matching `watch`
        self.watch: tuple[str, str] | None = None
        self.lock = threading.Lock()
        self.forwarder = requests.Session()
        self.forwarder.trust_env = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def take_mischief(self, method: str, path: str) -> str | None:
        with self.lock:
            for (m, prefix), action in list(self.mischief.items()):
                if m == method and path.startswith(prefix):
                    del self.mischief[(m, prefix)]
                    return action
        return None


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def _handle(self) -> None:
        target = self.path if self.path.startswith("http") else self.server.upstream + self.path
        path = urlsplit(target).path
        length = int(self.headers.get("Content-Length") or 0)
        action = self.server.take_mischief(self.command, path)
        if action == "drop_mid_body":
            self.rfile.read(min(length, 16 * 1024))
            self.server.log.append((self.command, path, "dropped"))
            self.close_connection = True  # closed with the body unread: the client's send is reset
            return
        body = self.rfile.read(length) if length else b""
        if action == "gateway_502":
            self.server.log.append((self.command, path, 502))
            self._answer(502, {"Content-Type": "text/html"}, PAGE_502)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        answer = self.server.forwarder.request(
            self.command, target, data=body, headers=headers, timeout=60, allow_redirects=False
        )
        watch = self.server.watch
        if watch and self.command == watch[0] and path.startswith(watch[1]):
            self.server.seen.set()
        if action == "lose_answer":
            self.server.log.append((self.command, path, f"lost {answer.status_code}"))
            self.close_connection = True
            return
        self.server.log.append((self.command, path, answer.status_code))
        relayed = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in {"content-type", "retry-after", "x-request-id", "allow"}
        }
        self._answer(answer.status_code, relayed, answer.content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's names)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(api_server: ApiServer) -> Iterator[_Proxy]:
    origin = urlsplit(api_server.base_url)
    server = _Proxy(f"{origin.scheme}://{origin.netloc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _through(proxy: _Proxy, api_server: ApiServer, key: str) -> Client:
    """A client whose every request, the presigned PUT included, goes through `proxy`."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy.url}
    return Client(api_key=key, base_url=api_server.base_url, session=session)


def _page_server(status: int, content_type: str, body: bytes) -> Iterator[str]:
    class Page(BaseHTTPRequestHandler):
        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _any  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def welcome_page() -> Iterator[str]:
    """A base URL that is a web server's, not the API's: 200 and an HTML page for everything."""
    yield from _page_server(200, "text/html", b"<html><body>Welcome to nginx!</body></html>")


@pytest.fixture
def too_large_page() -> Iterator[str]:
    """A proxy with a body size limit in front of the API: 413 and its HTML page."""
    yield from _page_server(413, "text/html", b"<html><title>413 Request Entity Too Large</title></html>")


# -- the presigned PUT and complete outlive a lost connection -----------------------------------------


def test_put_dropped_mid_body_is_sent_again_from_the_start(
    api_server: ApiServer, make_org: Callable[..., Org], proxy: _Proxy
) -> None:
    """Before: SERVICE_UNAVAILABLE, and the presigned upload held one of the plan's concurrent uploads
    for an hour (the Free plan's only one). The API takes a PUT again after one that failed."""
    org = make_org("free")
    proxy.mischief[("PUT", "/v1/uploads/")] = "drop_mid_body"
    sent: list[tuple[int, int]] = []
    upload = _through(proxy, api_server, org.key).upload(
        AUDIO / "jfk.mp3", progress=lambda *p: sent.append(p)
    )
    assert upload.status == "completed"
    puts = [outcome for method, _path, outcome in proxy.log if method == "PUT"]
    assert puts == ["dropped", 200]
    size = (AUDIO / "jfk.mp3").stat().st_size
    assert upload.size == size and sent[-1] == (size, size)


def test_put_and_complete_whose_answers_were_lost(
    api_server: ApiServer, make_org: Callable[..., Org], proxy: _Proxy
) -> None:
    """The PUT arrived but its answer did not: sent again, the API says the URL was used (409), which
    after a lost answer means the bytes are in place. Then complete's answer is lost too: sent again,
    the API answers the completed upload."""
    org = make_org("free")
    proxy.mischief[("PUT", "/v1/uploads/")] = "lose_answer"
    proxy.mischief[("POST", "/v1/uploads/complete")] = "lose_answer"
    upload = _through(proxy, api_server, org.key).upload(AUDIO / "jfk.mp3")
    assert upload.status == "completed"
    outcomes = [(method, outcome) for method, path, outcome in proxy.log if "/uploads/" in path]
    assert outcomes == [
        ("POST", 201),
        ("PUT", "lost 200"),
        ("PUT", 409),
        ("POST", "lost 200"),
        ("POST", 200),
    ]
    direct = Client(api_key=org.key, base_url=api_server.base_url)
    assert direct.create_transcription(upload.id).status == "queued"


# -- a gateway's 502 between deploys ------------------------------------------------------------------


def test_a_gateways_502_is_retried_for_requests_safe_to_repeat(
    api_server: ApiServer, shared_org: Org, proxy: _Proxy
) -> None:
    direct = Client(api_key=shared_org.key, base_url=api_server.base_url)
    created = direct.create_transcription(file=AUDIO / "jfk.mp3")
    sdk = Client(api_key=shared_org.key, base_url=f"{proxy.url}/v1")

    proxy.mischief[("GET", f"/v1/transcriptions/{created.id}")] = "gateway_502"
    assert sdk.get_transcription(created.id).id == created.id
    assert [o for m, _p, o in proxy.log if m == "GET"] == [502, 200]

    proxy.mischief[("POST", "/v1/uploads/presigned")] = "gateway_502"  # no key: may not be repeated
    with pytest.raises(CliptextError) as caught:
        sdk.presign_upload("a.mp3", "audio/mpeg", 1000)
    assert (caught.value.code, caught.value.status) == ("SERVICE_UNAVAILABLE", 502)
    assert [o for m, p, o in proxy.log if p.endswith("/presigned")] == [502]


# -- pages instead of JSON ----------------------------------------------------------------------------


def test_a_page_instead_of_json_is_an_error_not_a_traceback(welcome_page: str, run_cli: Run) -> None:
    sdk = Client(api_key="ck_x", base_url=welcome_page)
    for fmt in ("json", "verbose_json", "text", "srt"):
        with pytest.raises(CliptextError) as caught:
            sdk.get_transcription("txn_x", fmt)  # type: ignore[call-overload]
        assert caught.value.code == "INTERNAL" and "base URL" in caught.value.message, fmt
    for command in (["get", "txn_x"], ["get", "txn_x", "--format", "text"]):
        done = run_cli("ck_x", *command, base_url=welcome_page)
        assert done.returncode == EXIT_API_ERROR, command
        assert "Traceback" not in done.stderr and "error: INTERNAL" in done.stderr
        assert done.stdout == ""


def test_a_proxys_413_page_is_payload_too_large(too_large_page: str) -> None:
    sdk = Client(api_key="ck_x", base_url=too_large_page)
    with pytest.raises(CliptextError) as caught:
        sdk.create_transcription(file=AUDIO / "jfk.mp3")
    assert (caught.value.code, caught.value.status) == ("PAYLOAD_TOO_LARGE", 413)


# -- the request id to quote --------------------------------------------------------------------------


def test_errors_carry_the_request_id(api_server: ApiServer, shared_org: Org, run_cli: Run) -> None:
    sdk = Client(api_key=shared_org.key, base_url=api_server.base_url)
    with pytest.raises(CliptextError) as caught:
        sdk.get_transcription("txn_missing")
    request_id = caught.value.request_id
    assert caught.value.code == "NOT_FOUND" and request_id and re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert request_id in api_server.log.read_text(), "the id the API logged the request under"

    down = Client(api_key="ck_x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(CliptextError) as caught:
        down.list_orgs()
    assert caught.value.status is None and caught.value.request_id

    gone = run_cli(shared_org.key, "get", "txn_missing")
    assert gone.returncode == EXIT_API_ERROR
    assert re.search(r"^request id: [0-9a-f]{32}$", gone.stderr, re.MULTILINE), gone.stderr


# -- a key copied badly -------------------------------------------------------------------------------


def test_a_key_with_a_line_break_or_foreign_letters_is_never_printed(
    api_server: ApiServer, shared_org: Org, run_cli: Run
) -> None:
    assert Client(api_key=shared_org.key + "\n", base_url=api_server.base_url).list_orgs()
    for bad in ("ck_secret\nmore", "ck_secrét", "ck_ключ"):
        sdk = Client(api_key=bad, base_url=api_server.base_url, max_retries=0)
        with pytest.raises(CliptextError) as caught:
            sdk.list_orgs()
        assert caught.value.code == "UNAUTHORIZED"
        assert "secret" not in str(caught.value) and "ключ" not in str(caught.value)
        done = run_cli(None, "--api-key", bad, "list")
        assert done.returncode == EXIT_USAGE, done.stderr
        assert "Traceback" not in done.stderr and "secret" not in done.stderr and "ключ" not in done.stderr


def test_a_non_positive_http_timeout_is_a_usage_error(run_cli: Run) -> None:
    done = run_cli("ck_x", "--timeout", "0", "list")
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr
    with pytest.raises(ValueError, match="timeout"):
        Client(api_key="ck_x", timeout=0)


# -- Ctrl-C ---------------------------------------------------------------------------------------------


def _interrupt_when_seen(command: list[str], key: str, proxy: _Proxy) -> subprocess.CompletedProcess[str]:
    """Run the CLI through `proxy` and send it SIGINT once the proxy saw the request `proxy.watch`."""
    env = dict(os.environ, CLIPTEXT_API_KEY=key, CLIPTEXT_BASE_URL=f"{proxy.url}/v1")
    process = subprocess.Popen(
        [sys.executable, "-m", "cliptext.cli", *command],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background (`make test &`, nohup) ignores
        # SIGINT, and a child inherits that, so the Ctrl-C under test would never arrive
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    with process:
        try:
            assert proxy.seen.wait(60), "the command never got to its wait"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_during_wait_exits_130_without_a_traceback(
    api_server: ApiServer, shared_org: Org, proxy: _Proxy
) -> None:
    """No worker runs here: the transcription stays queued and `cliptext wait` polls until interrupted.
    Before: click's "Aborted!" and exit 1, the code of an API error."""
    created = Client(api_key=shared_org.key, base_url=api_server.base_url).create_transcription(
        file=AUDIO / "jfk.mp3"
    )
    proxy.watch = ("GET", f"/v1/transcriptions/{created.id}")
    done = _interrupt_when_seen(["wait", created.id], shared_org.key, proxy)
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr and "Aborted" not in done.stderr


def test_ctrl_c_during_transcribe_wait_names_what_goes_on(
    make_org: Callable[..., Org], proxy: _Proxy
) -> None:
    org = make_org("enterprise")
    proxy.watch = ("GET", "/v1/transcriptions/txn_")
    done = _interrupt_when_seen(["transcribe", str(AUDIO / "jfk.mp3"), "--wait"], org.key, proxy)
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    polled = next(p for m, p, _o in proxy.log if m == "GET" and p.startswith("/v1/transcriptions/txn_"))
    transcription_id = polled.rsplit("/", 1)[-1]
    assert f"{transcription_id} (jfk.mp3)" in done.stderr and "Traceback" not in done.stderr


# -- output -------------------------------------------------------------------------------------------


def test_output_dir_refuses_two_inputs_of_one_name(
    run_cli: Run, make_org: Callable[..., Org], tmp_path: Path
) -> None:
    """jfk.mp3 and jfk.flac would both be written to DIR/jfk.txt. Before: both uploaded and queued,
    and (with a worker) the second transcript written over the first."""
    org = make_org("enterprise")
    done = run_cli(
        org.key,
        "transcribe",
        str(AUDIO / "jfk.mp3"),
        str(AUDIO / "jfk.flac"),
        "--wait",
        "--timeout",
        "1",
        "-o",
        str(tmp_path / "out"),
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "jfk.txt" in done.stderr
    assert run_cli(org.key, "list").stdout == "", "refused before any upload"


def test_a_transcript_a_latin1_terminal_cannot_show(
    api_server: ApiServer, make_org: Callable[..., Org], run_cli: Run, tmp_path: Path
) -> None:
    """The transcript's text is set in the API's database (no worker runs here). Before: a
    UnicodeEncodeError traceback, and nothing listed."""
    org = make_org("enterprise")
    created = Client(api_key=org.key, base_url=api_server.base_url).create_transcription(
        file=AUDIO / "jfk.mp3"
    )
    database = sqlite3.connect(api_server.env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=30)
    with database:
        database.execute(
            "UPDATE transcription SET text = ? WHERE public_id = ?", ("Grüße, 日本語", created.id)
        )
    database.close()
    env = dict(os.environ, CLIPTEXT_API_KEY=org.key, CLIPTEXT_BASE_URL=api_server.base_url)
    env["PYTHONIOENCODING"] = "latin-1"
    done = subprocess.run(
        [sys.executable, "-m", "cliptext.cli", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.decode("latin-1").rstrip("\n").endswith("Grüße, ???")


def test_backoff_is_jittered_within_its_exponential_bound() -> None:
    """Clients that failed together (an API restart) came back at the same instant: the same pause."""
    from cliptext.sdk import _backoff

    for attempt, bound in ((1, 0.5), (3, 2.0), (10, 5.0)):
        pauses = {_backoff(attempt) for _ in range(50)}
        assert len(pauses) > 1
        assert all(bound / 2 <= pause <= bound for pause in pauses)
