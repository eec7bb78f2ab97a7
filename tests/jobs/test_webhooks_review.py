"""Webhook deliveries against receivers that misbehave: one that answers a byte at a time, one whose
answer never ends, a URL refused with a token in it, a transcription deleted while its event is on the
way. Real database (both kinds where it matters), real sockets, the real delivery job."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.db import db, init_db
from api.models import Organization, Transcription, TranscriptionStatus, WebhookDelivery, utcnow
from api.services.orgs import create_org, operator_rotate_webhook_secret
from cliptext.settings import Settings
from jobs.webhooks import DeliveryFailed, deliver_webhook
from tests.api.postgres_admin import fresh_database
from tests.jobs.test_jobs_webhooks import Receiver
from tests.seed import completed_upload

EVENT = "transcription.completed"
TIMEOUT = 2  # CLIPTEXT_WEBHOOK_TIMEOUT of these tests


def _settings(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow_private: str
) -> Iterator[None]:
    with fresh_database(kind, tmp_path, "ct_hookrev_") as url:
        monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DATABASE_URL", url)  # deliver_webhook reads its own settings
        monkeypatch.setenv("CLIPTEXT_WEBHOOK_ALLOW_PRIVATE", allow_private)
        monkeypatch.setenv("CLIPTEXT_WEBHOOK_TIMEOUT", str(TIMEOUT))
        init_db(dataclasses.replace(Settings.from_env(), database_url=url), migrate=True)
        yield
        db.close()


@pytest.fixture
def loopback_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _settings("sqlite", tmp_path, monkeypatch, "1")


@pytest.fixture(params=["sqlite", "postgres"])
def loopback_allowed_any_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    yield from _settings(request.param, tmp_path, monkeypatch, "1")


@pytest.fixture
def public_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _settings("sqlite", tmp_path, monkeypatch, "0")


def ended_with_webhook(url: str) -> Transcription:
    with db.connection_context():
        org, _, _ = create_org("hooks", "hooks@example.com", "pro")
        return Transcription.create(
            organization=org,
            upload=completed_upload(org, "a.mp3"),
            status=TranscriptionStatus.COMPLETED,
            webhook_url=url,
            completed_at=utcnow(),
        )


def deliveries(row: Transcription) -> list[tuple[int | None, str | None]]:
    with db.connection_context():
        query = WebhookDelivery.select().where(WebhookDelivery.transcription == row.id)
        return [(d.status_code, d.error) for d in query.order_by(WebhookDelivery.attempt)]


class RawReceiver:
    """A loopback listener whose one connection `answer(sock)` serves after the request arrives; it
    records how many bytes it managed to send before the caller hung up."""

    def __init__(self, answer: Callable[[socket.socket], int]):
        self.answer = answer
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)  # the request (small: headers and a JSON body of a few hundred bytes)
            self.sent = self.answer(conn)

    def close(self) -> None:
        self.thread.join(timeout=60)
        self.listener.close()


def byte_at_a_time(conn: socket.socket) -> int:
    """A 200 whose header section takes 20 s to arrive, a byte every 50 ms: never a read that waits
    as long as the timeout, so only a deadline on the whole answer stops it."""
    answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 400 + b"\r\nContent-Length: 0\r\n\r\n"
    for sent, byte in enumerate(answer):
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return sent
        time.sleep(0.05)
    return len(answer)


def endless_body(conn: socket.socket, limit: int = 128 << 20) -> int:
    """A 200 whose chunked body goes on (up to `limit` bytes here) until the caller hangs up."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"
    sent = 0
    while sent < limit:
        try:
            conn.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
    return sent


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_timeout(loopback_allowed: None) -> None:
    """The timeout bounded each read, not the answer: the old delivery waited the 20 s out (in the
    worker, RQ killed the job after 3 x timeout + 30 s, the attempt unrecorded)."""
    receiver = RawReceiver(byte_at_a_time)
    try:
        row = ended_with_webhook(receiver.url)
        with pytest.raises(DeliveryFailed, match="no complete answer within 2 s"):
            deliver_webhook(row.public_id, EVENT)
    finally:
        receiver.close()
    origin = receiver.url.removesuffix("/hook")
    assert deliveries(row) == [(None, f"Timeout calling {origin}: no complete answer within 2 s")]


def test_an_answer_body_without_end_is_not_read(loopback_allowed: None) -> None:
    """The old delivery read the whole body into the worker's memory: 2 GB in 8 s over loopback."""
    receiver = RawReceiver(endless_body)
    try:
        row = ended_with_webhook(receiver.url)
        assert deliver_webhook(row.public_id, EVENT) == 200
    finally:
        receiver.close()
    assert receiver.sent < 32 << 20  # at most what the sockets' buffers took before the hang-up
    assert deliveries(row) == [(200, None)]


def test_a_target_refused_by_its_url_is_recorded_without_path_or_query(
    public_only: None, caplog: pytest.LogCaptureFixture
) -> None:
    """ssrfguard's refusal quotes the whole URL; an address that passes the first check by name and is
    refused by the pinned connection's URL check (an IPv4 loopback inside the NAT64 prefix) left the
    token of the path and the query in the stored error and the log."""
    row = ended_with_webhook("http://user:PASSWORD@[64:ff9b::7f00:1]:8080/hook/PATHSECRET?token=QUERYSECRET")
    with caplog.at_level(logging.WARNING, logger="jobs.webhooks"):
        assert deliver_webhook(row.public_id, EVENT) is None
    [(status, error)] = deliveries(row)
    assert status is None and error.startswith("refused") and "64:ff9b::7f00:1" in error
    for secret in ("PASSWORD", "PATHSECRET", "QUERYSECRET"):
        assert secret not in error
        assert secret not in caplog.text


@pytest.mark.parametrize("status", [500, 200])
def test_a_transcription_deleted_while_its_event_is_delivered(
    loopback_allowed_any_db: None, status: int
) -> None:
    """The attempt's record had failed on the foreign key (PostgreSQL, and SQLite with its foreign keys
    on): the job crashed with an IntegrityError, and was retried for nothing."""
    receiver = Receiver([status])
    row = ended_with_webhook(receiver.url)
    answer = receiver.server.RequestHandlerClass.do_POST

    def delete_then_answer(handler) -> None:  # the user's DELETE, while the receiver works on the event
        with db.connection_context():
            Transcription.delete().where(Transcription.id == row.id).execute()
        answer(handler)

    receiver.server.RequestHandlerClass.do_POST = delete_then_answer
    try:
        assert deliver_webhook(row.public_id, EVENT) == (200 if status == 200 else None)
    finally:
        receiver.close()
    assert len(receiver.requests) == 1
    assert deliveries(row) == []
    assert deliver_webhook(row.public_id, EVENT) is None  # a retry, had there been one: nothing to do


def docs_verify() -> Callable[[str, str | None, str | None, bytes], bool]:
    """The `verify` of docs/webhooks.md, as a receiver would paste it."""
    text = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify"]


def test_the_documented_verify_accepts_a_delivery_and_refuses_forgeries(loopback_allowed: None) -> None:
    """The example had raised on headers an attacker chose (a timestamp that is not a number, a
    signature with a non-ASCII character): a receiver that pasted it answered 500, not a refusal."""
    verify = docs_verify()
    receiver = Receiver([])
    try:
        row = ended_with_webhook(receiver.url)
        assert deliver_webhook(row.public_id, EVENT) == 200
    finally:
        receiver.close()
    with db.connection_context():
        secret = Organization.get_by_id(row.organization_id).webhook_secret
    [(headers, body)] = receiver.requests
    timestamp, signature = headers["Cliptext-Timestamp"], headers["Cliptext-Signature"]
    assert headers["Cliptext-Event"] == EVENT == json.loads(body)["type"]
    assert verify(secret, timestamp, signature, body)
    assert not verify("another secret", timestamp, signature, body)
    assert not verify(secret, timestamp, signature, body.replace(b"completed", b"failed"))
    assert not verify(secret, str(int(timestamp) - 301), signature, body)
    for forged_timestamp, forged_signature in [
        (None, signature),
        (timestamp, None),
        ("soon", signature),
        ("", signature),
        (timestamp, "v1=\u00e9" + signature[4:]),
        ("9" * 5000, signature),  # past int()'s 4,300 digits: the example raised ValueError
        (timestamp, ","),
    ]:
        assert not verify(secret, forged_timestamp, forged_signature, body)


def test_the_documented_verify_accepts_either_signature_after_a_rotation(
    loopback_allowed_any_db: None,
) -> None:
    """After a rotation each delivery carries `v1=<new>,v1=<previous>`: the documented verify compared
    the whole header with one signature, so a receiver that pasted it refused every delivery for the
    24 h overlap, whichever secret it held."""
    verify = docs_verify()
    receiver = Receiver([])
    try:
        row = ended_with_webhook(receiver.url)
        with db.connection_context():
            old = Organization.get_by_id(row.organization_id).webhook_secret
            new = operator_rotate_webhook_secret(row.organization.public_id).secret
        assert deliver_webhook(row.public_id, EVENT) == 200
    finally:
        receiver.close()
    [(headers, body)] = receiver.requests
    timestamp, signature = headers["Cliptext-Timestamp"], headers["Cliptext-Signature"]
    assert signature.count("v1=") == 2
    assert verify(new, timestamp, signature, body)
    assert verify(old, timestamp, signature, body)
    assert not verify("another secret", timestamp, signature, body)
    assert not verify(new, timestamp, signature, body.replace(b"completed", b"failed"))
    assert not verify(old, str(int(timestamp) - 301), signature, body)
