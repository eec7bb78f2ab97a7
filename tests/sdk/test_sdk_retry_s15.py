"""Retrying with the SDK after a failure, against the real API: transcribe(idempotency_key=K) called again
after its first attempt died at any step (one upload, one transcription, never a 409), and wait() polling
through an API that cannot be reached for a while (a restart) instead of giving up.

The failures are real ones: the network cut by a requests.Session that stops sending at a chosen request,
and a TCP relay of our own in front of the API that refuses connections, or answers 502 as a load balancer
does, then relays again."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from cliptext.sdk import Client, CliptextError, Transcription
from tests.sdk.conftest import AUDIO, ApiServer, Org

AUDIO_FILE = AUDIO / "jfk.mp3"
OUTAGE_S = 6.0  # longer than the ~3.5 s of retries one GET makes
WAIT_TIMEOUT_S = 8.0  # room for the 3.5 s of one GET's retries, a 1 s pause and the next GET
GATEWAY_BODY = b"<html><head><title>502 Bad Gateway</title></head></html>\r\n"
GATEWAY_PAGE = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nConnection: close\r\n"
    + f"Content-Length: {len(GATEWAY_BODY)}\r\n\r\n".encode()
    + GATEWAY_BODY
)


class CuttingSession(requests.Session):
    """A session that records every request (method, URL), and whose network goes away at the first one
    matching `cut_at` (method, end of the URL's path): that request and, with `stays_down`, every later
    one raise ConnectionError, as when a laptop loses its network or the process is about to die."""

    def __init__(self, cut_at: tuple[str, str] | None = None, *, stays_down: bool = True) -> None:
        super().__init__()
        self.cut_at = cut_at
        self.stays_down = stays_down
        self.down = False
        self.sent: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args, **kwargs) -> requests.Response:  # type: ignore[override]
        path = url.split("?", 1)[0]
        hit = self.cut_at is not None and method == self.cut_at[0] and path.endswith(self.cut_at[1])
        if self.down or hit:
            self.down = self.stays_down
            self.cut_at = None if hit else self.cut_at
            raise requests.ConnectionError(f"network cut before {method} {path}")
        self.sent.append((method, path))
        return super().request(method, url, *args, **kwargs)

    def puts(self) -> list[str]:
        return [path for method, path in self.sent if method == "PUT"]


def _client(api_server: ApiServer, org: Org, session: requests.Session | None = None, **kwargs) -> Client:
    return Client(org.key, api_server.base_url, session=session or requests.Session(), **kwargs)


def _upload_id_of_put(path: str) -> str:
    return path.rstrip("/").split("/")[-2]  # .../v1/uploads/<id>/content


def _transcribe(client: Client, key: str) -> Transcription:
    return client.transcribe(AUDIO_FILE, wait=False, idempotency_key=key)


def _first_attempt_dies(api_server: ApiServer, org: Org, key: str, session: CuttingSession) -> None:
    with _client(api_server, org, session, max_retries=0) as client, pytest.raises(CliptextError) as raised:
        _transcribe(client, key)
    assert raised.value.code == "SERVICE_UNAVAILABLE", raised.value
    assert raised.value.details["idempotency_key"] == key


def _retry(api_server: ApiServer, org: Org, key: str) -> tuple[Transcription, CuttingSession]:
    session = CuttingSession()
    with _client(api_server, org, session) as client:
        return _transcribe(client, key), session


# ---------------------------------------------------------------------------------------------------
# transcribe(idempotency_key=K), repeated


def test_transcribe_again_with_the_same_key_answers_the_first_transcription(
    api_server: ApiServer, shared_org: Org
) -> None:
    key = secrets.token_hex(8)
    first, first_session = _retry(api_server, shared_org, key)
    again, again_session = _retry(api_server, shared_org, key)
    assert (again.id, again.upload_id) == (first.id, first.upload_id)
    assert len(first_session.puts()) == 1
    assert again_session.puts() == []  # the completed upload is not sent again


def test_retry_after_dying_between_put_and_complete_completes_the_same_upload(
    api_server: ApiServer, shared_org: Org
) -> None:
    key = secrets.token_hex(8)
    dying = CuttingSession(("POST", "/uploads/complete"))
    _first_attempt_dies(api_server, shared_org, key, dying)
    [put] = dying.puts()
    retried, session = _retry(api_server, shared_org, key)
    assert retried.upload_id == _upload_id_of_put(put)
    assert session.puts() == []  # its bytes were in place already
    assert _retry(api_server, shared_org, key)[0].id == retried.id


def test_retry_after_dying_between_complete_and_create_creates_from_that_upload(
    api_server: ApiServer, shared_org: Org
) -> None:
    key = secrets.token_hex(8)
    dying = CuttingSession(("POST", "/transcriptions"))
    _first_attempt_dies(api_server, shared_org, key, dying)
    [put] = dying.puts()
    assert ("POST", f"{api_server.base_url}/uploads/complete") in dying.sent
    retried, session = _retry(api_server, shared_org, key)
    assert retried.upload_id == _upload_id_of_put(put)
    assert session.puts() == []
    assert _retry(api_server, shared_org, key)[0].id == retried.id


def test_retry_after_a_failed_put_gave_its_upload_back_uploads_anew(
    api_server: ApiServer, shared_org: Org
) -> None:
    """The first attempt's PUT fails for good and the SDK deletes that upload (its slot back): the retry
    cannot resume it, so it reserves another under a key derived from K, which later retries find too."""
    key = secrets.token_hex(8)
    dying = CuttingSession(("PUT", "/content"), stays_down=False)
    _first_attempt_dies(api_server, shared_org, key, dying)
    given_back = [path for method, path in dying.sent if method == "DELETE"]
    assert len(given_back) == 1
    retried, session = _retry(api_server, shared_org, key)
    assert len(session.puts()) == 1
    assert retried.upload_id != given_back[0].rsplit("/", 1)[-1]
    again, again_session = _retry(api_server, shared_org, key)
    assert (again.id, again.upload_id) == (retried.id, retried.upload_id)
    assert again_session.puts() == []


def test_presign_with_an_idempotency_key_is_replayed(api_server: ApiServer, shared_org: Org) -> None:
    headers = {"Authorization": f"Bearer {shared_org.key}", "Idempotency-Key": secrets.token_hex(8)}
    body = {"filename": "talk.mp3", "content_type": "audio/mpeg", "size": AUDIO_FILE.stat().st_size}
    url = f"{api_server.base_url}/uploads/presigned"
    first = requests.post(url, json=body, headers=headers, timeout=30)
    again = requests.post(url, json=body, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = requests.post(url, json={**body, "size": body["size"] + 1}, headers=headers, timeout=30)
    assert other.status_code == 409
    assert other.json()["error"]["details"]["reason"] == "key_reused"


def test_multipart_create_with_the_same_key_answers_the_same_transcription(
    api_server: ApiServer, shared_org: Org
) -> None:
    key = secrets.token_hex(8)
    with _client(api_server, shared_org) as client:
        first = client.create_transcription(file=AUDIO_FILE, idempotency_key=key)
        again = client.create_transcription(file=AUDIO_FILE, idempotency_key=key)
    assert (again.id, again.upload_id) == (first.id, first.upload_id)


# ---------------------------------------------------------------------------------------------------
# wait() through an outage


class Relay:
    """A TCP relay on its own port to the API's: relaying, refusing connections (its port closed), or
    answering every request with a load balancer's 502."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "relay"
        self.answered_502 = 0
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.listen()

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def relay(self) -> None:
        self.mode = "relay"
        if self._listener is None:
            self.listen()

    def refuse(self) -> None:
        """Close the port and every connection: the API gone, as during its restart."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._drop_connections()

    def answer_502(self) -> None:
        self.mode = "502"
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            handler = self._answer_502 if self.mode == "502" else self._pipe
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _answer_502(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            client.recv(65536)
            client.sendall(GATEWAY_PAGE)
            self.answered_502 += 1

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._copy, args=(upstream, client), daemon=True).start()
        self._copy(client, upstream)

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.refuse()


@pytest.fixture
def relay(api_server: ApiServer) -> Iterator[Relay]:
    host, port = api_server.base_url.split("//", 1)[1].split("/", 1)[0].split(":")
    running = Relay((host, int(port)))
    yield running
    running.close()


class SawItAgain(Exception):
    """Raised from on_update at the first poll answered after the outage: wait() would poll on forever
    (no worker runs here, the transcription stays queued)."""


@pytest.mark.parametrize("outage", ["refused", "502"])
def test_wait_without_timeout_polls_through_an_api_outage(
    api_server: ApiServer, shared_org: Org, relay: Relay, outage: str
) -> None:
    polls: list[str] = []
    restored = threading.Event()

    def restore() -> None:
        relay.relay()
        restored.set()

    def on_update(transcription: Transcription) -> None:
        polls.append(transcription.status)
        if restored.is_set():
            raise SawItAgain
        if len(polls) == 1:
            relay.refuse() if outage == "refused" else relay.answer_502()
            threading.Timer(OUTAGE_S, restore).start()

    base_url = f"http://127.0.0.1:{relay.port}/v1"
    with Client(shared_org.key, base_url, session=requests.Session()) as client:
        queued = client.create_transcription(file=AUDIO_FILE)
        with pytest.raises(SawItAgain):
            client.wait(queued.id, poll_interval=0.2, on_update=on_update)
    assert polls == ["queued", "queued"]


def test_wait_still_raises_a_real_error_at_once(api_server: ApiServer, shared_org: Org) -> None:
    with _client(api_server, shared_org) as client:
        queued = client.create_transcription(file=AUDIO_FILE)
        client.delete_transcription(queued.id)
        with pytest.raises(CliptextError) as raised:
            client.wait(queued.id)
    assert raised.value.code == "NOT_FOUND" and raised.value.status == 404


def test_wait_with_a_timeout_polls_through_an_outage_until_it(
    api_server: ApiServer, shared_org: Org, relay: Relay
) -> None:
    """A load balancer answers 502 for longer than the timeout: wait() polls on (more GETs than one
    request's retries make) and at its deadline raises the outage's error, naming the transcription."""
    base_url = f"http://127.0.0.1:{relay.port}/v1"
    with Client(shared_org.key, base_url, session=requests.Session()) as client:
        queued = client.create_transcription(file=AUDIO_FILE)
        relay.answer_502()
        with pytest.raises(CliptextError) as raised:
            client.wait(queued.id, timeout=WAIT_TIMEOUT_S)
    assert (raised.value.code, raised.value.status) == ("SERVICE_UNAVAILABLE", 502), raised.value
    assert raised.value.details == {"id": queued.id, "status": None}
    assert relay.answered_502 > 1 + client.max_retries
