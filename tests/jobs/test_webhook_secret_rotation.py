"""Rotating the webhook secret: for 24 h deliveries carry a signature with the new secret and one with
the old, so a receiver holding either accepts them; after that, only the new one. The whole stack as
real processes (API under gunicorn, inference server, RQ worker) and a real receiver on loopback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator

import pytest
import requests

from api.models import utcnow
from cliptext.sdk import Client, CliptextError
from tests.jobs.stack import Stack
from tests.jobs.test_jobs_webhooks import Receiver
from tests.media import AUDIO_DIR

JFK = AUDIO_DIR / "jfk.mp3"


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver([])
    yield receiver
    receiver.close()


class Owner:
    """The owner of an organization of its own (the stack's shared one keeps its secret untouched)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        email = f"{secrets.token_hex(4)}@example.com"
        key = stack.create_org("Rotation", "--plan", "enterprise", "--owner", email, "--rate-limit", "100000")
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}
        self.org_id = self.call("GET", "/v1/orgs").json()["data"][0]["id"]

    def sdk(self) -> Client:
        return Client(self.key, f"{self.stack.api_url}/v1")

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(
            method, self.stack.api_url + path, headers=self.headers, timeout=60, **kwargs
        )
        assert response.ok, response.text
        return response

    def transcribe_with_webhook(self, url: str) -> str:
        with JFK.open("rb") as audio:
            files = {"file": (JFK.name, audio, "audio/mpeg")}
            created = self.call("POST", "/v1/transcriptions", files=files, data={"webhook_url": url}).json()
        deadline = time.monotonic() + 120
        while True:
            body = self.call("GET", f"/v1/transcriptions/{created['id']}").json()
            if body["status"] == "completed":
                return created["id"]
            assert body["status"] not in ("failed", "canceled") and time.monotonic() < deadline, body
            time.sleep(0.2)


def test_deliveries_carry_both_signatures_during_the_overlap_and_then_one(
    stack: Stack, receiver: Receiver
) -> None:
    stack.start_worker()
    owner = Owner(stack)
    with owner.sdk() as client:  # as a customer would: the SDK against the real API
        old = client.webhook_secret(owner.org_id).secret
        rotated = client.rotate_webhook_secret(owner.org_id)
    new = rotated.secret
    assert new != old and rotated.previous_secret_valid_until is not None

    owner.transcribe_with_webhook(receiver.url)
    receiver.wait_for(1)
    headers, body = receiver.requests[0]
    timestamp = headers["Cliptext-Timestamp"]
    # the new secret's signature first, then the old one's: a receiver with either accepts it
    assert (
        headers["Cliptext-Signature"]
        == f"{signature_of(new, timestamp, body)},{signature_of(old, timestamp, body)}"
    )

    # 25 h after the rotation (moved back in the database): the old secret signs no more
    with contextlib.closing(sqlite3.connect(stack.tmp / "jobs.db", timeout=10)) as conn, conn:
        conn.execute(
            "UPDATE organization SET webhook_secret_rotated_at = ? WHERE public_id = ?",
            (str(utcnow() - dt.timedelta(hours=25)), owner.org_id),
        )
    assert owner.call("GET", f"/v1/orgs/{owner.org_id}/webhook-secret").json() == {
        "secret": new,
        "previous_secret_valid_until": None,
    }
    owner.transcribe_with_webhook(receiver.url)
    receiver.wait_for(2)
    headers, body = receiver.requests[1]
    assert headers["Cliptext-Signature"] == signature_of(new, headers["Cliptext-Timestamp"], body)


def test_the_sdk_reads_and_rotates_the_secret(stack: Stack) -> None:
    owner, other = Owner(stack), Owner(stack)
    with owner.sdk() as client:
        first = client.webhook_secret(owner.org_id)
        assert first.previous_secret_valid_until is None and first.secret not in repr(first)
        rotated = client.rotate_webhook_secret(owner.org_id)
        assert rotated.secret != first.secret
        assert rotated.previous_secret_valid_until is not None
        assert rotated.previous_secret_valid_until.tzinfo is not None  # "…Z": an aware UTC time
        assert client.webhook_secret(owner.org_id) == rotated
        for call in (client.webhook_secret, client.rotate_webhook_secret):
            with pytest.raises(CliptextError) as refused:
                call(other.org_id)
            assert (refused.value.code, refused.value.status) == ("NOT_FOUND", 404)
    with other.sdk() as client:
        assert client.webhook_secret(other.org_id).secret not in (first.secret, rotated.secret)
