"""Webhooks: signed, delivered to a real local receiver, retried after a 500, private targets refused."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rq.job import Job

from api.models import Transcription
from cliptext.settings import Settings
from jobs.webhooks import WebhookRefused, check_target, delivery_job_id, enqueue_webhook, event_body
from tests.jobs.stack import REDIS_URL, Stack
from tests.media import AUDIO_DIR
from tests.redis_db import flushed_redis

JFK = AUDIO_DIR / "jfk.mp3"


class Receiver:
    """An HTTP server on loopback that records each request and answers with the next queued status."""

    def __init__(self, statuses: list[int]):
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cliptext"

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} webhook requests"
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver([500])
    yield receiver
    receiver.close()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does (docs/webhooks.md): recompute the HMAC and compare in constant time."""
    timestamp = headers["Cliptext-Timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["Cliptext-Signature"], f"v1={expected}")


def test_webhook_is_signed_and_retried_after_a_500(stack: Stack, receiver: Receiver) -> None:
    worker = stack.start_worker()
    created = stack.create(stack.upload(JFK, "audio/mpeg"), webhook_url=receiver.url)
    assert stack.wait(created["id"], timeout=120)["status"] == "completed"
    receiver.wait_for(2)
    time.sleep(1)
    assert len(receiver.requests) == 2  # one 500, one success, nothing more

    [(secret,)] = stack.query(
        "SELECT o.webhook_secret FROM organization o JOIN transcription t ON t.organization_id = o.id "
        "WHERE t.public_id = ?",
        created["id"],
    )
    for headers, body in receiver.requests:
        assert headers["Content-Type"] == "application/json"
        assert verify(secret, headers, body)
        assert not verify("another secret", headers, body)
        assert not verify(secret, headers, body.replace(b"completed", b"failed"))
        event = json.loads(body)
        assert event["type"] == "transcription.completed"
        assert event["data"]["id"] == created["id"]
        assert event["data"]["status"] == "completed"
        assert event["data"]["error"] is None
        assert event["data"]["url"] == f"{stack.api_url}/v1/transcriptions/{created['id']}"
    assert stack.http("GET", json.loads(receiver.requests[0][1])["data"]["url"][len(stack.api_url) :]).ok
    assert len({json.loads(body)["created_at"] for _, body in receiver.requests}) == 1  # one event, retried

    deliveries = stack.query(
        "SELECT d.attempt, d.status_code, d.error FROM webhook_delivery d JOIN transcription t "
        "ON d.transcription_id = t.id WHERE t.public_id = ? ORDER BY d.attempt",
        created["id"],
    )
    assert deliveries == [(1, 500, "HTTP 500"), (2, 200, None)]
    # a receiver's 500 is routine: one WARNING line, not RQ's ERROR with a traceback for each attempt
    failed_attempts = [line for line in worker.log().splitlines() if "attempt failed" in line]
    assert len(failed_attempts) == 1 and '"WARNING"' in failed_attempts[0], worker.log()
    assert "Traceback" not in worker.log()


def test_failed_transcription_is_announced(stack: Stack, receiver: Receiver, tmp_path) -> None:
    receiver.statuses.clear()
    corrupt = tmp_path / "corrupt.mp3"
    data = JFK.read_bytes()
    corrupt.write_bytes(data[:8000] + bytes(len(data) - 8000))
    stack.start_worker()
    created = stack.create(stack.upload(corrupt, "audio/mpeg"), webhook_url=receiver.url)
    assert stack.wait(created["id"], timeout=60)["status"] == "failed"
    receiver.wait_for(1)
    event = json.loads(receiver.requests[0][1])
    assert event["type"] == "transcription.failed"
    assert event["data"]["error"]["code"] == "AUDIO_DECODE_ERROR"


def test_private_target_is_refused_without_the_setting(stack: Stack, receiver: Receiver) -> None:
    stack.start_worker(CLIPTEXT_WEBHOOK_ALLOW_PRIVATE="0")
    created = stack.create(stack.upload(JFK, "audio/mpeg"), webhook_url=receiver.url)
    assert stack.wait(created["id"], timeout=120)["status"] == "completed"
    deadline = time.monotonic() + 30
    while not (
        rows := stack.query(
            "SELECT d.status_code, d.error FROM webhook_delivery d JOIN transcription t "
            "ON d.transcription_id = t.id WHERE t.public_id = ?",
            created["id"],
        )
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert len(rows) == 1 and rows[0][0] is None and rows[0][1].startswith("refused")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "not a url",
    ],
)
def test_check_target_refuses_private_and_odd_targets(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_target(url, allow_private=False)


def test_check_target_allows_loopback_when_configured() -> None:
    check_target("http://127.0.0.1:9/hook", allow_private=True)
    check_target("http://93.184.215.14/hook", allow_private=False)  # a public address literal


@pytest.mark.parametrize(
    ("retries", "waits"),
    [
        (5, [10, 60, 300, 1800, 7200]),
        (2, [10, 60]),
        (3, [10, 60, 300]),
        (7, [10, 60, 300, 1800, 7200, 7200, 7200]),
    ],
)
def test_webhook_retries_wait_the_configured_intervals_in_order(retries: int, waits: list[int]) -> None:
    """RQ picks a failed job's wait counting from the end of its list: with another number of retries
    than intervals, 2 retries waited 30 min then 2 h instead of 10 s then 1 min."""
    settings = dataclasses.replace(Settings.from_env(), webhook_retries=retries)
    with flushed_redis(REDIS_URL) as conn:
        enqueue_webhook(conn, settings, "txn_waits", "transcription.completed")
        job = Job.fetch(delivery_job_id("txn_waits", "transcription.completed"), connection=conn)
        applied = []
        while job.should_retry:  # what RQ does after each failed attempt
            applied.append(job.get_retry_interval())
            job.retries_left -= 1
    assert applied == waits


def test_an_event_is_dated_when_its_transcription_ended_on_every_attempt() -> None:
    """A retry two hours later is the same event (same id): the receiver must not see it re-dated."""
    ended = datetime.datetime(2026, 1, 15, 10, 30, tzinfo=datetime.UTC)
    row = Transcription(public_id="txn_dated", status="completed", completed_at=ended.replace(tzinfo=None))
    event = json.loads(event_body(Settings.from_env(), row, "transcription.completed"))
    assert event["id"] == "evt_txn_dated.transcription.completed"
    assert event["created_at"] == int(ended.timestamp())
