"""DNS rebinding against webhook delivery: the target's name resolves to a public address when it is
checked and to loopback when the connection opens. The delivery must connect to the address it checked,
or nowhere. The name server is the one stand-in (socket.getaddrinfo answers for one test name); the
receiver, the database and the delivery are real."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.db import db, init_db
from api.models import Transcription, TranscriptionStatus, WebhookDelivery, utcnow
from api.services.orgs import create_org
from cliptext.settings import Settings
from jobs.webhooks import deliver_webhook
from tests.api.postgres_admin import fresh_database
from tests.jobs.test_jobs_webhooks import Receiver
from tests.seed import completed_upload

REBINDING_NAME = "hooks.rebind.example"
PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with fresh_database("sqlite", tmp_path, "ct_rebind_") as url:
        monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DATABASE_URL", url)  # deliver_webhook reads its own settings
        monkeypatch.setenv("CLIPTEXT_WEBHOOK_ALLOW_PRIVATE", "0")
        settings = dataclasses.replace(Settings.from_env(), database_url=url)
        init_db(settings, migrate=True)
        yield settings
        db.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver([])
    yield receiver
    receiver.close()


@pytest.mark.parametrize("userinfo", ["", "alice:s3cret@"])
def test_a_target_rebinding_to_loopback_after_the_check_is_never_called(
    settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, userinfo: str
) -> None:
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == REBINDING_NAME:  # public for the first answer, the receiver's loopback after
            lookups.append(host)
            host = PUBLIC_ADDRESS if len(lookups) == 1 else "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = receiver.server.server_address[1]
    with db.connection_context():
        org, _, _ = create_org("rebind", "rebind@example.com", "pro")
        row = Transcription.create(
            organization=org,
            upload=completed_upload(org, "a.mp3"),
            status=TranscriptionStatus.COMPLETED,
            webhook_url=f"http://{userinfo}{REBINDING_NAME}:{port}/hook",
            completed_at=utcnow(),
        )
    assert deliver_webhook(row.public_id, "transcription.completed") is None
    assert receiver.requests == []  # the old delivery resolved the name again and posted to loopback
    assert len(lookups) == 2  # by name when checked, then once where the connection was opened
    with db.connection_context():
        [delivery] = WebhookDelivery.select().where(WebhookDelivery.transcription == row.id)
        assert delivery.status_code is None and delivery.error.startswith("refused")
        assert "127.0.0.1" in delivery.error and "s3cret" not in delivery.error
