"""Recovery of transcription jobs that died with their worker, run by every worker's maintenance.

RQ's own StartedJobRegistry cleanup notices a job whose worker stopped heartbeating (SIGKILL, OOM,
a lost machine) and moves it to the FailedJobRegistry (or retries it if it was enqueued with a
Retry). A job only ends up there while its transcription is still queued/processing when the job
code never ran to its end: this sweep requeues such jobs (RQ's FailedJobRegistry.requeue) up to
settings.job_max_recoveries times, at the front of the queue, then fails the transcription with
INTERNAL. The failed jobs of deleted transcriptions (stopped by the API's DELETE) are deleted.

A transcription can also lose its job altogether: Redis restarted without persistence (or was
flushed, or failed over) and took the queues with it. `requeue_orphans` enqueues again every
queued/processing transcription whose job has been missing for settings.job_orphan_grace seconds;
the database is the truth, Redis only the work list. A job that was in fact still running is
harmless to run twice (jobs.transcript_store: the newer run takes over, nothing is duplicated).

`enqueue_missed_webhooks` enqueues the webhook of a transcription that ended without one (its worker
died between storing the status and enqueueing the delivery, or Redis lost the delivery job).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

import redis
from peewee import fn
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry

from api.db import db
from api.models import Organization, Transcription, TranscriptionStatus, WebhookDelivery, utcnow
from api.queue import enqueue_transcription, job_request_id, queue_family
from cliptext.errors import ErrorCode
from cliptext.jsonlog import request_id_context
from cliptext.settings import Settings
from jobs import transcript_store as store
from jobs.timeouts import job_timeout

log = logging.getLogger(__name__)

RECOVERIES_META = "recoveries"
_ACTIVE = (TranscriptionStatus.QUEUED, TranscriptionStatus.PROCESSING)


def recover_abandoned(connection: redis.Redis, settings: Settings, queue_name: str) -> list[str]:
    """Requeue (or finally fail) transcription jobs that failed without finishing their transcription.

    Returns the ids of the requeued jobs. Opens and closes its own database connection, so the
    worker never forks a work horse while holding one.
    """
    registry = FailedJobRegistry(queue_name, connection=connection)
    job_ids = registry.get_job_ids()
    if not job_ids:
        return []
    requeued: list[str] = []
    with db.connection_context():
        statuses = dict(
            Transcription.select(Transcription.public_id, Transcription.status)
            .where(Transcription.public_id.in_(job_ids))
            .tuples()
        )
        active = {job_id for job_id, status in statuses.items() if status in _ACTIVE}
        _forget_deleted(registry, [job_id for job_id in job_ids if job_id not in statuses])
        for job_id in job_ids:
            if job_id not in active:
                continue
            try:
                job = Job.fetch(job_id, connection=connection)
            except NoSuchJobError:
                continue
            with request_id_context(job_request_id(job, job.id)):
                if _recover(connection, settings, registry, job):
                    requeued.append(job_id)
    return requeued


def _forget_deleted(registry: FailedJobRegistry, job_ids: list[str]) -> None:
    """Delete the failed jobs of deleted transcriptions: the API stops the job of a transcription deleted
    while processing, RQ files it as failed for its failure_ttl (7 days), and the dashboard listed every
    such delete as a failed job, each checked again by this sweep every maintenance."""
    for job_id in job_ids:
        with contextlib.suppress(NoSuchJobError):
            registry.remove(job_id, delete_job=True)


def _recover(connection: redis.Redis, settings: Settings, registry: FailedJobRegistry, job: Job) -> bool:
    """Requeue one abandoned job, or fail its transcription once it died too often; whether requeued."""
    job_id = job.id
    recoveries = int(job.meta.get(RECOVERIES_META, 0))
    if recoveries >= settings.job_max_recoveries:
        log.error("transcription %s: its job died %d times, giving up", job_id, recoveries + 1)
        if store.fail_by_public_id(
            job_id, ErrorCode.INTERNAL, "the transcription job stopped unexpectedly too many times"
        ):
            _notify_failed(connection, settings, job_id)
        return False
    job.meta[RECOVERIES_META] = recoveries + 1
    job.save_meta()
    try:
        # at the front: it had waited its turn once, and a worker stopped by a deploy (SIGKILLed after
        # its grace) must not send an hour-old job behind the whole backlog again
        registry.requeue(job, at_front=True)
    except InvalidJobOperation:  # another worker's sweep took it first
        return False
    log.warning("transcription %s: job died with its worker, requeued (%d)", job_id, recoveries + 1)
    return True


def requeue_orphans(connection: redis.Redis, settings: Settings, queue_name: str) -> list[str]:
    """Enqueue again the queued/processing transcriptions that have no RQ job (see the module docstring),
    each on its organization's queue of the family of `queue_name` (api.queue.org_queue).

    Returns their ids. The grace covers the moment between the API's insert and its enqueue; a
    short-lived Redis key keeps two workers' sweeps from enqueueing the same one twice.
    """
    cutoff = utcnow() - timedelta(seconds=settings.job_orphan_grace)
    queued, processing = TranscriptionStatus.QUEUED, TranscriptionStatus.PROCESSING
    with db.connection_context():
        rows = list(
            Transcription.select(Transcription.public_id, Transcription.duration, Organization.public_id)
            .join(Organization)
            .where(
                ((Transcription.status == queued) & (Transcription.created_at < cutoff))
                | ((Transcription.status == processing) & (Transcription.started_at < cutoff))
            )
            .tuples()
        )
    requeued: list[str] = []
    for public_id, duration, org_public_id in rows:
        if connection.exists(Job.key_for(public_id)):
            continue
        claim = f"cliptext:orphan-requeue:{public_id}"
        if not connection.set(claim, 1, nx=True, ex=max(1, settings.job_orphan_grace)):
            continue
        enqueue_transcription(
            connection,
            public_id,
            queue_name=queue_family(queue_name),  # a worker pinned to one organization's queue too
            job_timeout=job_timeout(settings, duration),
            org_public_id=org_public_id,
        )
        with request_id_context(public_id):  # the X-Request-Id went with the lost job
            log.warning("transcription %s had no job (Redis lost it?): enqueued again", public_id)
        requeued.append(public_id)
    return requeued


# a webhook missed for longer than this is not sent late any more
MISSED_WEBHOOK_HORIZON = timedelta(hours=24)


def enqueue_missed_webhooks(connection: redis.Redis, settings: Settings, queue_name: str) -> list[str]:
    """Enqueue the webhook of every transcription that ended (completed or failed) without one.

    The worker stores the final status, then enqueues the webhook: a worker killed between the two,
    or a Redis that lost the queued delivery, left the receiver with nothing (docs/webhooks.md
    promises at least once). A transcription counts as missed when it ended more than
    settings.job_orphan_grace seconds ago (and less than MISSED_WEBHOOK_HORIZON), has a webhook URL,
    no recorded delivery attempt, and no delivery job. `queue_name` is unused: a sweep's signature.
    """
    from jobs.transcribe import COMPLETED_EVENT, FAILED_EVENT
    from jobs.webhooks import delivery_job_id, enqueue_webhook

    now = utcnow()
    events = {TranscriptionStatus.COMPLETED: COMPLETED_EVENT, TranscriptionStatus.FAILED: FAILED_EVENT}
    with db.connection_context():
        attempted = WebhookDelivery.select().where(WebhookDelivery.transcription == Transcription.id)
        rows = list(
            Transcription.select(Transcription.public_id, Transcription.status).where(
                Transcription.status.in_(tuple(events))
                & Transcription.webhook_url.is_null(False)
                & (Transcription.completed_at < now - timedelta(seconds=settings.job_orphan_grace))
                & (Transcription.completed_at > now - MISSED_WEBHOOK_HORIZON)
                & ~fn.EXISTS(attempted)
            )
        )
    enqueued: list[str] = []
    for row in rows:
        event = events[row.status]
        job_id = delivery_job_id(row.public_id, event)
        if connection.exists(Job.key_for(job_id)):
            continue  # queued, or waiting for a retry
        if not enqueue_webhook(connection, settings, row.public_id, event):
            continue  # queued meanwhile: by the worker that stored the result, or another sweep
        with request_id_context(row.public_id):
            log.warning("transcription %s ended without its webhook: %s enqueued", row.public_id, event)
        enqueued.append(row.public_id)
    return enqueued


def _notify_failed(connection: redis.Redis, settings: Settings, public_id: str) -> None:
    from jobs.transcribe import FAILED_EVENT
    from jobs.webhooks import enqueue_webhook

    row = Transcription.get_or_none(Transcription.public_id == public_id)
    if row is not None and row.webhook_url:
        enqueue_webhook(connection, settings, public_id, FAILED_EVENT)
