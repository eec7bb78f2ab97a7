"""The SDK of a field-recording app on a bad network: the real API behind a hostile forward proxy of our
own (plain sockets, one request per connection) that, on a schedule, resets a connection mid-body,
loses an answer the API gave, answers a gateway's 502/504 page, cuts an answer mid-body, trickles it,
or answers for a server whose clock is hours off the phone's."""

from __future__ import annotations

import email.utils
import io
import re
import secrets
import socket
import struct
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import requests

from cliptext.sdk import UPLOAD_CHUNK, Client, CliptextError
from tests.sdk.conftest import AUDIO, ApiServer, Org, _flask

AUDIO_FILE = AUDIO / "jfk.mp3"
TRICKLE_S = 0.25  # a poll's answer (some 400 bytes of JSON) takes over a minute
GATEWAY_BODY = b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"


def _page(status: str, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: text/html", "Connection: close", *extra]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    outcome: str = ""


@dataclass
class HostileProxy:
    """A forward proxy (a Session's `proxies`, so the presigned PUT goes through it too) that relays
    each request to the API on a connection of its own and misbehaves once per entry of `schedule`:
    (method, path regex, action), taken in order by the first request matching it. Actions:
    "reset_mid_body" (read part of the body, then RST), "lose_answer" (relay, then RST instead of the
    answer), "gateway" (a 502 page, nothing relayed), "gateway_after" (relay, then a 504 page),
    "truncate" (relay, then half the answer and close), or bytes: that answer, nothing relayed."""

    schedule: list[tuple[str, str, str | bytes]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)

    def outcomes(self, method: str, pattern: str) -> list[str]:
        return [s.outcome for s in self.seen if s.method == method and re.search(pattern, s.path)]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take(self, method: str, path: str) -> str | bytes | None:
        with self._lock:
            for i, (m, pattern, action) in enumerate(self.schedule):
                if m == method and re.search(pattern, path):
                    del self.schedule[i]
                    return action
        return None

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            line = reader.readline().decode("latin-1")
            if not line:
                return
            method, target, _ = line.split(" ", 2)
            headers: dict[str, str] = {}
            while (raw := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            url = urlsplit(target)
            seen = Seen(method, url.path, headers)
            with self._lock:
                self.seen.append(seen)
            action = self._take(method, url.path)
            length = int(headers.get("content-length") or 0)
            if action == "reset_mid_body":
                reader.read(min(length // 2, 64 * 1024))
                seen.outcome = "reset"
                return _reset(conn)
            body = reader.read(length) if length else b""
            if isinstance(action, bytes):
                seen.outcome = action.split(b" ", 2)[1].decode()
                conn.sendall(action)
                return
            if action == "gateway":
                seen.outcome = "502"
                conn.sendall(_page("502 Bad Gateway", GATEWAY_BODY.replace(b"504 Gateway Time-out", b"502")))
                return
            answer = _relay(method, url, headers, body)
            status = answer.split(b" ", 2)[1].decode()
            if action == "lose_answer":
                seen.outcome = f"lost {status}"
                return _reset(conn)
            if action == "gateway_after":
                seen.outcome = f"504 after {status}"
                conn.sendall(_page("504 Gateway Time-out", GATEWAY_BODY))
                return
            if action == "truncate":
                seen.outcome = f"cut {status}"
                conn.sendall(answer[: len(answer) - max(1, len(answer.split(b"\r\n\r\n", 1)[1]) // 2)])
                return
            if action == "trickle":
                seen.outcome = f"trickled {status}"
                return _trickle(conn, answer)
            seen.outcome = status
            conn.sendall(answer)


def _reset(conn: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a NAT or a radio handover drops a connection."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _trickle(conn: socket.socket, answer: bytes) -> None:
    """The answer's head, then its body a byte every TRICKLE_S (a congested radio link, a large
    transcript), until the client goes."""
    head, body = answer.split(b"\r\n\r\n", 1)
    try:
        conn.sendall(head + b"\r\n\r\n")
        for i in range(len(body)):
            time.sleep(TRICKLE_S)
            conn.sendall(body[i : i + 1])
    except OSError:
        return


def _relay(method: str, url, headers: dict[str, str], body: bytes) -> bytes:
    """The API's whole answer to the request, on a connection of its own closed after it."""
    skip = {"connection", "proxy-connection", "keep-alive"}
    lines = [f"{method} {url.path}{'?' + url.query if url.query else ''} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k not in skip] + ["Connection: close"]
    with socket.create_connection((url.hostname, url.port), timeout=60) as upstream:
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        chunks = []
        while chunk := upstream.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def proxy() -> Iterator[HostileProxy]:
    hostile = HostileProxy()
    yield hostile
    hostile.close()


@pytest.fixture
def one_slot_org(api_server: ApiServer) -> Org:
    """An organization with one concurrent upload (as the Free plan) and room for many requests."""
    args = ["orgs", "create", f"Field {secrets.token_hex(3)}", "--plan", "enterprise"]
    args += ["--owner", f"field-{secrets.token_hex(4)}@example.com", "--rate-limit", "10000"]
    key = _flask(api_server.env, *args, "--concurrent-uploads", "1").strip().splitlines()[-1]
    return Org(id="", key=key)


def _through(proxy: HostileProxy, api_server: ApiServer, org: Org, **kwargs) -> Client:
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy.url}
    return Client(org.key, api_server.base_url, session=session, **kwargs)


def _direct(api_server: ApiServer, org: Org) -> Client:
    return Client(org.key, api_server.base_url, timeout=30)


def _only_transcription(api_server: ApiServer, org: Org) -> str:
    ids = [t.id for t in _direct(api_server, org).list_transcriptions()]
    assert len(ids) == 1, ids
    return ids[0]


def _slot_is_free(api_server: ApiServer, org: Org) -> None:
    """Nothing holds the organization's only concurrent upload: a new one is presigned at once."""
    with _direct(api_server, org) as sdk:
        sdk.max_retries = 0
        sdk.delete_upload(sdk.presign_upload("probe.mp3", "audio/mpeg", 1000).id)


# -- a gateway's page answering the presigned PUT -----------------------------------------------------


@pytest.mark.parametrize("action", ["gateway", "gateway_after"])
def test_a_put_answered_by_a_gateways_page_is_sent_again(
    action: str, api_server: ApiServer, one_slot_org: Org, proxy: HostileProxy
) -> None:
    """Before: the 502/504 page of a proxy in front of storage failed the whole transcribe() (the
    upload given back, the file to send again), where a connection reset at the same point is retried.
    After "gateway_after" the API has the bytes: the resend's 409 "URL used" means they arrived."""
    proxy.schedule.append(("PUT", r"/content$", action))
    key = secrets.token_hex(8)
    with _through(proxy, api_server, one_slot_org, timeout=30) as sdk:
        created = sdk.transcribe(AUDIO_FILE, wait=False, idempotency_key=key)
    assert proxy.outcomes("PUT", r"/content$")[0] in ("502", "504 after 200")
    assert len(proxy.outcomes("PUT", r"/content$")) == 2
    assert _only_transcription(api_server, one_slot_org) == created.id
    _slot_is_free(api_server, one_slot_org)


class _CountingFile(io.FileIO):
    """A file on disk that records the size of each read."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "rb")
        self.reads: list[int] = []

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.reads.append(len(data))
        return data


def test_a_large_put_reset_mid_body_is_read_from_disk_again(
    api_server: ApiServer, one_slot_org: Org, proxy: HostileProxy, tmp_path
) -> None:
    """A 6 MB recording whose PUT is reset halfway: sent again from the file (chunks of at most
    UPLOAD_CHUNK, never the whole file in memory), progress starting over at 0 and ending at the total,
    one transcription, the slot free."""
    path = tmp_path / "field.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(6_400_000))
    size = path.stat().st_size
    proxy.schedule.append(("PUT", r"/content$", "reset_mid_body"))
    calls: list[tuple[int, int]] = []
    with _through(proxy, api_server, one_slot_org, timeout=30) as sdk, _CountingFile(str(path)) as source:
        created = sdk.transcribe(
            source, wait=False, idempotency_key=secrets.token_hex(8), progress=lambda *p: calls.append(p)
        )
    assert proxy.outcomes("PUT", r"/content$") == ["reset", "200"]
    assert max(source.reads) <= UPLOAD_CHUNK and sum(source.reads) > size
    assert calls.count((0, size)) == 2 and calls[-1] == (size, size)
    assert _only_transcription(api_server, one_slot_org) == created.id
    _slot_is_free(api_server, one_slot_org)


# -- the presign's answer lost -----------------------------------------------------------------------


def test_a_lost_presign_answer_leaves_no_orphan_upload(
    api_server: ApiServer, one_slot_org: Org, proxy: HostileProxy
) -> None:
    """Before: transcribe() without a key sent its presign once: the answer lost, it raised
    SERVICE_UNAVAILABLE and the upload the API had reserved held the plan's only slot for an hour,
    so the app's retry met 429 CONCURRENT_UPLOAD_LIMIT. Now the presign carries a key of its own, is
    retried, and the API answers the same upload."""
    proxy.schedule.append(("POST", r"/uploads/presigned$", "lose_answer"))
    with _through(proxy, api_server, one_slot_org, timeout=30) as sdk:
        created = sdk.transcribe(AUDIO_FILE, wait=False)
    presigns = [s for s in proxy.seen if s.path.endswith("/uploads/presigned")]
    assert [s.outcome for s in presigns] == ["lost 201", "201"]  # the replay
    assert presigns[0].headers["idempotency-key"] == presigns[1].headers["idempotency-key"]
    assert _only_transcription(api_server, one_slot_org) == created.id
    _slot_is_free(api_server, one_slot_org)


# -- clock skew ----------------------------------------------------------------------------------------


def test_retry_after_as_a_date_counts_from_the_servers_clock(
    api_server: ApiServer, shared_org: Org, proxy: HostileProxy
) -> None:
    """A rate limiter's Retry-After as an HTTP-date, on a server whose clock is two hours ahead of the
    phone's: 1 s by the server's own Date. Before: read against the phone's clock, 7201 s, over
    max_retry_wait, so the 429 was raised instead of retried."""
    created = _direct(api_server, shared_org).create_transcription(file=AUDIO_FILE)
    server_now = time.time() + 2 * 3600
    date = email.utils.formatdate(server_now, usegmt=True)
    later = email.utils.formatdate(server_now + 1, usegmt=True)
    page = _page("429 Too Many Requests", b"slow down", f"Date: {date}", f"Retry-After: {later}")
    proxy.schedule.append(("GET", r"/transcriptions/", page))
    waits: list[float] = []
    with _through(proxy, api_server, shared_org, on_retry=lambda _e, s: waits.append(s)) as sdk:
        assert sdk.get_transcription(created.id).id == created.id
    assert proxy.outcomes("GET", r"/transcriptions/") == ["429", "200"]
    assert len(waits) == 1 and 0 < waits[0] <= 2


# -- a trickling answer ------------------------------------------------------------------------------


def test_wait_gives_up_at_its_timeout_on_an_answer_that_trickles_in(
    api_server: ApiServer, shared_org: Org, proxy: HostileProxy
) -> None:
    """Before: the client's timeout bounds each read, not the answer, so a poll whose answer's body came
    a byte at a time held wait(timeout=2) for the minute and more the body took."""
    created = _direct(api_server, shared_org).create_transcription(file=AUDIO_FILE)
    proxy.schedule.append(("GET", r"/transcriptions/", "trickle"))
    started = time.monotonic()
    with _through(proxy, api_server, shared_org, timeout=30) as sdk, pytest.raises(CliptextError) as raised:
        sdk.wait(created.id, timeout=2)
    assert (raised.value.code, raised.value.status) == ("TIMEOUT", None)
    assert created.id in raised.value.message
    assert time.monotonic() - started < 10
    assert proxy.outcomes("GET", r"/transcriptions/") == ["trickled 200"]


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """A server that answers every request with its headers and 5 bytes of a JSON body, then nothing
    (a connection that stalls mid-answer): its base URL."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            body = b'{"id": "txn_1", "status": "processing"}'
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
                body
            )
            conn.sendall(head + body[:5])
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_wait_on_an_answer_that_stalls_mid_body_is_a_timeout(stalling_server: str) -> None:
    """A read that stalled until wait()'s deadline was taken for a lost connection: SERVICE_UNAVAILABLE
    (the CLI's "unreachable" exit) where the deadline had passed, TIMEOUT."""
    client = Client(api_key="ck_" + "a" * 40, base_url=stalling_server, timeout=30)
    started = time.monotonic()
    with pytest.raises(CliptextError) as raised:
        client.wait("txn_1", timeout=2)
    assert raised.value.code == "TIMEOUT", raised.value
    assert time.monotonic() - started < 10
