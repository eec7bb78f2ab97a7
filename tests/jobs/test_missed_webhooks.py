"""The recovery sweep that enqueues a webhook a transcription ended without (its worker died between
storing the final status and enqueueing the delivery): real database (both kinds), real Redis."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue

from api.db import db, init_db
from api.models import Transcription, TranscriptionStatus, WebhookDelivery, utcnow
from api.services.orgs import create_org
from cliptext.settings import Settings
from jobs.recovery import enqueue_missed_webhooks
from jobs.webhooks import QUEUE_NAME, deliver_webhook, delivery_job_id, enqueue_webhook
from tests.api.postgres_admin import fresh_database
from tests.redis_db import flushed_redis
from tests.seed import completed_upload

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def connection() -> Iterator[redis.Redis]:
    with flushed_redis(REDIS_URL) as conn:
        yield conn


@pytest.fixture(params=["sqlite", "postgres"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    with fresh_database(request.param, tmp_path, "ct_hooks_") as url:
        monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DATABASE_URL", url)  # for deliver_webhook, which reads its own settings
        settings = dataclasses.replace(Settings.from_env(), database_url=url, job_orphan_grace=60)
        init_db(settings, migrate=True)
        yield settings
        db.close()


def ended(org, upload, status: str, minutes_ago: float, webhook: str | None = "https://hooks.example.com/x"):
    return Transcription.create(
        organization=org,
        upload=upload,
        status=status,
        webhook_url=webhook,
        completed_at=utcnow() - dt.timedelta(minutes=minutes_ago),
    )


def test_a_webhook_missed_by_a_dead_worker_is_enqueued_once(
    settings: Settings, connection: redis.Redis
) -> None:
    with db.connection_context():
        org, _, _ = create_org("hooks", "hooks@example.com", "pro")
        upload = completed_upload(org, "a.mp3")
        missed = ended(org, upload, TranscriptionStatus.COMPLETED, 5)
        missed_failure = ended(org, upload, TranscriptionStatus.FAILED, 5)
        delivered = ended(org, upload, TranscriptionStatus.COMPLETED, 5)
        WebhookDelivery.create(transcription=delivered, attempt=1, status_code=200)
        just_now = ended(org, upload, TranscriptionStatus.COMPLETED, 0.2)  # its worker may still enqueue it
        ended(org, upload, TranscriptionStatus.COMPLETED, 5, webhook=None)
        ended(org, upload, TranscriptionStatus.CANCELED, 5)
        ended(org, upload, TranscriptionStatus.COMPLETED, 60 * 25)  # past the horizon

    found = enqueue_missed_webhooks(connection, settings, "transcriptions")
    assert sorted(found) == sorted([missed.public_id, missed_failure.public_id])
    queue = Queue(QUEUE_NAME, connection=connection)
    assert sorted(queue.job_ids) == sorted(
        [
            delivery_job_id(missed.public_id, "transcription.completed"),
            delivery_job_id(missed_failure.public_id, "transcription.failed"),
        ]
    )
    assert just_now.public_id not in found
    # a second sweep (another worker, the next minute) finds the jobs there: nothing twice
    assert enqueue_missed_webhooks(connection, settings, "transcriptions") == []
    assert len(queue.job_ids) == 2


def test_the_worker_and_the_sweep_queue_a_webhook_once(settings: Settings, connection: redis.Redis) -> None:
    """A worker merely slow between storing the result and queueing its webhook, and the sweep, both
    try: one job (the receiver had been called twice)."""
    with db.connection_context():
        org, _, _ = create_org("hooks", "hooks@example.com", "pro")
        upload = completed_upload(org, "a.mp3")
        slow = ended(org, upload, TranscriptionStatus.COMPLETED, 5)
        first_then_sweep = ended(org, upload, TranscriptionStatus.COMPLETED, 5)
    queue = Queue(QUEUE_NAME, connection=connection)
    # the worker queued it, the job ran and its record expired: the sweep must not queue it again
    assert enqueue_webhook(connection, settings, first_then_sweep.public_id, "transcription.completed")
    queue.empty()
    assert enqueue_missed_webhooks(connection, settings, "transcriptions") == [slow.public_id]
    # the slow worker wakes and queues its webhook: already queued by the sweep
    assert not enqueue_webhook(connection, settings, slow.public_id, "transcription.completed")
    assert queue.job_ids == [delivery_job_id(slow.public_id, "transcription.completed")]


def test_a_delivered_event_is_not_sent_again(settings: Settings, connection: redis.Redis) -> None:
    with db.connection_context():
        org, _, _ = create_org("hooks", "hooks@example.com", "pro")
        row = ended(org, completed_upload(org, "a.mp3"), TranscriptionStatus.COMPLETED, 5)
        WebhookDelivery.create(transcription=row, attempt=1, status_code=204)
    # its target (example.com) is never called: the one 2xx on record is enough
    assert deliver_webhook(row.public_id, "transcription.completed") is None
    with db.connection_context():
        assert WebhookDelivery.select().where(WebhookDelivery.transcription == row.id).count() == 1
