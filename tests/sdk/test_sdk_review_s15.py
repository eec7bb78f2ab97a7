"""The SDK and CLI where the answer is not the API's, or the base URL is mistyped, or an error comes
after some transcriptions were queued: the real API, and a real HTTP server of our own on a free port
standing in for a proxy or another service."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cliptext.cli import EXIT_API_ERROR, EXIT_TIMEOUT, EXIT_USAGE
from cliptext.sdk import Client, CliptextError
from tests.sdk.conftest import AUDIO, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]
Answering = Callable[..., str]

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@pytest.fixture
def answering() -> Iterator[Answering]:
    """answering(status, content_type, body, headers={}) -> the base URL of a server that answers every
    request so (a proxy's page, another service's JSON), stopped after the test."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        class Answer(BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                for name, value in {"Content-Type": content_type, **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815 (http.server's names)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- a proxy's page is one line, not its HTML ---------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "said"),
    [
        (NGINX_502, "HTTP 502: 502 Bad Gateway"),
        (b"<html><body>\n<h1>Bad Gateway</h1>\n<p>The upstream &amp; its\n peers are down.</p></body></html>",
         "HTTP 502: Bad Gateway The upstream & its peers are down."),
    ],
)  # fmt: skip
def test_a_proxys_html_page_is_one_line(answering: Answering, run_cli: Run, page: bytes, said: str) -> None:
    """Before: the message was the page's HTML, and the CLI printed its every line after "error:"."""
    base_url = answering(502, "text/html", page)
    with pytest.raises(CliptextError) as caught:
        Client(api_key="ck_x", base_url=base_url).presign_upload("a.mp3", "audio/mpeg", 10)
    error = caught.value
    assert (error.code, error.status, error.message) == ("SERVICE_UNAVAILABLE", 502, said)

    done = run_cli("ck_x", "transcribe", str(AUDIO / "jfk.mp3"), base_url=base_url)
    assert done.returncode == EXIT_API_ERROR
    assert _error_lines(done.stderr) == [f"error: SERVICE_UNAVAILABLE: {said}"]
    assert "<" not in done.stderr, done.stderr


def test_the_cli_says_when_to_retry_a_refusal(answering: Answering, run_cli: Run) -> None:
    """A 429 whose Retry-After is beyond what the SDK waits for is raised: the CLI said neither that nor
    when to come back, though the error carries it."""
    base_url = answering(429, "text/html", b"<title>Too Many Requests</title>", {"Retry-After": "600"})
    done = run_cli("ck_x", "get", "txn_x", base_url=base_url)
    assert done.returncode == EXIT_API_ERROR
    assert "retry after: 600 s" in done.stderr.splitlines(), done.stderr


def test_the_cli_says_while_it_waits_to_retry(answering: Answering, run_cli: Run) -> None:
    """A 429 within what the SDK waits for is retried after its Retry-After: a batch on the Free plan
    spent minutes in these waits and printed nothing, as if hung."""
    limited = b'{"error": {"code": "RATE_LIMITED", "message": "Rate limit exceeded", "details": {}}}'
    base_url = answering(429, "application/json", limited, {"Retry-After": "1"})
    done = run_cli("ck_x", "get", "txn_x", base_url=base_url)
    assert done.returncode == EXIT_API_ERROR
    waits = [line for line in done.stderr.splitlines() if line.startswith("waiting ")]
    assert waits == ["waiting 1 s, then retrying: RATE_LIMITED: Rate limit exceeded"] * 3, done.stderr


# -- JSON that is not the API's is an error, not a traceback ------------------------------------------


def test_json_of_another_shape_is_an_error_not_a_traceback(answering: Answering, run_cli: Run) -> None:
    """A base URL that reaches another JSON service: before, TypeError (no id, status) or AttributeError
    ('list' object has no attribute 'get') out of the SDK, and a traceback out of the CLI."""
    empty_object = answering(200, "application/json", b"{}")
    sdk = Client(api_key="ck_x", base_url=empty_object)
    for call in (
        lambda: sdk.get_transcription("txn_x"),
        lambda: sdk.presign_upload("a.mp3", "audio/mpeg", 10),
        lambda: sdk.get_org("org_x"),
    ):
        with pytest.raises(CliptextError) as caught:
            call()
        assert caught.value.code == "INTERNAL" and "base URL" in caught.value.message

    array = answering(200, "application/json", b"[1, 2]")
    with pytest.raises(CliptextError) as caught:
        list(Client(api_key="ck_x", base_url=array).list_transcriptions())
    assert caught.value.code == "INTERNAL" and caught.value.status == 200

    for base_url, command in ((empty_object, ["get", "txn_x"]), (array, ["list"])):
        done = run_cli("ck_x", *command, base_url=base_url)
        assert done.returncode == EXIT_API_ERROR, command
        assert "Traceback" not in done.stderr and _error_lines(done.stderr)[0].startswith("error: INTERNAL")


# -- a base URL without its scheme ----------------------------------------------------------------------


@pytest.mark.parametrize("given", ["localhost:8000", "127.0.0.1:8000/v1", "api.example/v1"])
def test_a_base_url_without_a_scheme_is_refused_at_once(given: str, run_cli: Run) -> None:
    """Before: sent as is, each call retried for seconds, then SERVICE_UNAVAILABLE "No connection
    adapters were found" and the CLI's exit 5, as if the API were down."""
    with pytest.raises(ValueError, match="http://"):
        Client(api_key="ck_x", base_url=given)
    done = run_cli("ck_x", "list", base_url=given)
    assert done.returncode == EXIT_USAGE and "http://" in done.stderr
    assert "Traceback" not in done.stderr


# -- transcriptions queued before an error are named --------------------------------------------------


def _named_as_going_on(stderr: str) -> list[str]:
    return re.findall(r"^not waited for, goes on: (txn_\w+) \(", stderr, re.MULTILINE)


def test_transcribe_wait_names_what_an_error_leaves_queued(
    api_server: ApiServer, shared_org: Org, run_cli: Run, tmp_path: Path
) -> None:
    """`transcribe a.mp3 notes.txt --wait`: a.mp3 is queued, notes.txt refused (named, and the batch goes
    on). With --wait no id is printed as it is queued, so before, a.mp3's transcription went on (and was
    charged) unnamed when the wait then ended in an error (here no worker runs: a timeout)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n")
    files = [str(AUDIO / "jfk.mp3"), str(notes)]
    done = run_cli(shared_org.key, "transcribe", *files, "--wait", "--timeout", "0.5")
    assert done.returncode == EXIT_TIMEOUT and done.stdout == ""
    errors = _error_lines(done.stderr)
    assert errors[0] == f"error: {notes}: VALIDATION_ERROR: Invalid file format"
    assert errors[1].startswith("error: TIMEOUT: ")
    named = _named_as_going_on(done.stderr)
    assert len(named) == 1, done.stderr
    sdk = Client(api_key=shared_org.key, base_url=api_server.base_url)
    assert sdk.get_transcription(named[0]).status == "queued"


def test_transcribe_wait_timeout_names_the_files_not_waited_for(shared_org: Org, run_cli: Run) -> None:
    """No worker runs here: the first file times out, and the second's id was printed nowhere."""
    files = [str(AUDIO / "jfk.mp3"), str(AUDIO / "jfk.flac")]
    done = run_cli(shared_org.key, "transcribe", *files, "--wait", "--timeout", "0.5")
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    named = _named_as_going_on(done.stderr)
    assert len(named) == 2 and re.search(rf"{named[1]} \(jfk\.flac\)", done.stderr), done.stderr
