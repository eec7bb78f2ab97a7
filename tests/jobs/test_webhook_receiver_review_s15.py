"""A receiver's view of webhook deliveries (review s15): an answer the receiver (or a proxy before it)
cut off within its headers is not a delivery. Real sockets, the real delivery job, a real database."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.webhooks import DeliveryFailed, deliver_webhook
from tests.jobs.test_webhooks_review import RawReceiver, _settings, deliveries, ended_with_webhook

EVENT = "transcription.completed"


@pytest.fixture
def loopback_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _settings("sqlite", tmp_path, monkeypatch, "1")


def hangs_up_after(answer: bytes):
    """A receiver that sends `answer` and hangs up (a FIN, then what is left of the request read until
    the caller closes: unread bytes would make the close a reset, another failure than the one meant)."""

    def serve(conn: socket.socket) -> int:
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(30)
        while conn.recv(65536):
            pass
        return len(answer)

    return serve


def deliver_to(answer: bytes) -> tuple[object, list[tuple[int | None, str | None]]]:
    """One delivery attempt to a receiver that answers `answer` and hangs up: what deliver_webhook
    returned (or the DeliveryFailed it raised), and the attempts recorded."""
    receiver = RawReceiver(hangs_up_after(answer))
    try:
        row = ended_with_webhook(receiver.url)
        try:
            outcome: object = deliver_webhook(row.public_id, EVENT)
        except DeliveryFailed as failed:
            outcome = failed
    finally:
        receiver.close()
    return outcome, deliveries(row)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/pl",  # hung up within a header line
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # the blank line that ends the headers never came
        b"HTTP/1.1 204 No Content",  # the status line alone, not even ended
    ],
)
def test_an_answer_cut_off_within_its_headers_is_retried(loopback_allowed: None, answer: bytes) -> None:
    """http.client takes the end of the stream for the end of the headers: the delivery was recorded as
    a 2xx and never sent again, where the docs ask for the status line and all the headers (the same
    answer cut off by the timeout was already a failure)."""
    outcome, attempts = deliver_to(answer)
    assert isinstance(outcome, DeliveryFailed), outcome
    [(status, error)] = attempts
    assert status is None
    assert error.startswith("ConnectionError calling http://127.0.0.1:")
    assert "closed connection within the answer's headers" in error
    # a whole answer from a receiver that closes the connection after it is still a delivery
    assert deliver_to(b"HTTP/1.0 200 OK\r\n\r\n") == (200, [(200, None)])
