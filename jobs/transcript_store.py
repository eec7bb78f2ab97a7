"""The database side of a transcription job: every state change is one guarded, atomic write.

Each write names the status it expects (`WHERE status = processing`), so a transcription canceled or
deleted by the API while the job runs is noticed at the next write and nothing more is stored.
Segments are upserted by (transcription, index): a job run again after its worker died overwrites
instead of duplicating.

A run owns the transcription from its `start` on: `started_at` is its token, and every later write
also names it. When a second run starts the same transcription (recovery requeued a job whose worker
was only slow, or Redis lost its queues and the job was enqueued again), the first run's next write
fails and it stops without touching what the new run stores: nothing is wiped or written twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from api.db import db, init_db, write_transaction
from api.models import Segment, Transcription, TranscriptionStatus, Upload, utcnow
from cliptext.settings import Settings
from inference.types import Segment as EngineSegment

log = logging.getLogger(__name__)

_ACTIVE = (TranscriptionStatus.QUEUED, TranscriptionStatus.PROCESSING)


def ensure_db(settings: Settings) -> None:
    """Point the shared database proxy at settings.database_url unless the process already did."""
    if db.obj is None:
        init_db(settings)


@dataclass(frozen=True)
class Started:
    """What the job needs of a transcription it has just moved to `processing`."""

    id: int
    public_id: str
    storage_key: str | None
    duration: float | None
    options: dict[str, Any]
    webhook_url: str | None
    started_at: datetime | None = None  # this run's token (see the module docstring)


def start(public_id: str) -> Started | None:
    """queued|processing -> processing, old segments removed; None when there is nothing to do."""
    with write_transaction():
        row = Transcription.get_or_none(Transcription.public_id == public_id)
        if row is None or row.status not in _ACTIVE:
            return None
        now = utcnow()
        if row.started_at is not None and now <= row.started_at:  # a token never repeats
            now = row.started_at + timedelta(microseconds=1)
        unchanged = Transcription.started_at == row.started_at  # peewee writes IS NULL for None
        updated = (
            Transcription.update(
                status=TranscriptionStatus.PROCESSING,
                started_at=now,
                progress=0.0,
                text=None,
                error_code=None,
                error_message=None,
                completed_at=None,
            )
            .where((Transcription.id == row.id) & Transcription.status.in_(_ACTIVE) & unchanged)
            .execute()
        )
        if not updated:  # another run started it between our read and our write
            return None
        Segment.delete().where(Segment.transcription == row.id).execute()
        upload = Upload.get_or_none(Upload.id == row.upload_id) if row.upload_id else None
        return Started(
            id=row.id,
            public_id=row.public_id,
            storage_key=upload.storage_key if upload else None,
            duration=row.duration if row.duration is not None else (upload.duration if upload else None),
            options=dict(row.options or {}),
            webhook_url=row.webhook_url,
            started_at=now,
        )


def storable(text: str) -> str:
    """`text` with NUL replaced by U+FFFD: PostgreSQL's text refuses NUL, and whisper's byte-level
    tokens can decode to one (noise), which must not fail the whole transcription."""
    return text.replace("\x00", "\ufffd")


def _owned(run: Started):
    """The transcription is still processing, by this run."""
    return (
        (Transcription.id == run.id)
        & (Transcription.status == TranscriptionStatus.PROCESSING)
        & (Transcription.started_at == run.started_at)
    )


def _still_processing(run: Started, **fields: Any) -> bool:
    """Update `fields` if this run still owns the transcription; False when canceled/deleted/taken over."""
    query = Transcription.update(**fields) if fields else Transcription.update(status=Transcription.status)
    return bool(query.where(_owned(run)).execute())


def save_segment(run: Started, index: int, segment: EngineSegment, progress: float | None) -> bool:
    """Store one segment (upsert) and the progress; False when this run no longer owns the transcription."""
    words = (
        [
            {"start": w.start, "end": w.end, "word": w.word, "probability": w.probability}
            for w in segment.words
        ]
        if segment.words is not None
        else None
    )
    values = {
        "start": segment.start,
        "end": segment.end,
        "text": storable(segment.text),
        "words": words,
        "seek": segment.seek,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }
    with db.atomic():
        fields = {} if progress is None else {"progress": progress}
        if not _still_processing(run, **fields):
            return False
        Segment.insert(transcription=run.id, index=index, **values).on_conflict(
            conflict_target=[Segment.transcription, Segment.index],
            update={getattr(Segment, name): value for name, value in values.items()},
        ).execute()
    return True


def save_progress(run: Started, progress: float) -> bool:
    return _still_processing(run, progress=progress)


def complete(run: Started, text: str, duration: float | None, language: str | None) -> bool:
    """processing -> completed with the full text; False when canceled/deleted/taken over meanwhile."""
    with db.atomic():
        return _still_processing(
            run,
            status=TranscriptionStatus.COMPLETED,
            text=storable(text),
            duration=duration,
            language=language,
            progress=1.0,
            completed_at=utcnow(),
        )


def fail(transcription_id: int, code: str, message: str, run: Started | None = None) -> bool:
    """queued|processing -> failed with an error code; partial segments are removed.

    With `run`, only while that run owns the transcription (a superseded run fails nothing).
    """
    condition = (Transcription.id == transcription_id) & Transcription.status.in_(_ACTIVE)
    if run is not None:
        condition = _owned(run)
    with db.atomic():
        updated = (
            Transcription.update(
                status=TranscriptionStatus.FAILED,
                error_code=str(code),
                error_message=storable(message[:2000]),
                progress=None,
                completed_at=utcnow(),
            )
            .where(condition)
            .execute()
        )
        if updated:
            Segment.delete().where(Segment.transcription == transcription_id).execute()
        return bool(updated)


def fail_by_public_id(public_id: str, code: str, message: str) -> bool:
    row = Transcription.get_or_none(Transcription.public_id == public_id)
    return row is not None and fail(row.id, code, message)


# a transcription waiting for another run: no progress, no start (the API showed a queued one started)
_QUEUED_AGAIN = {"status": TranscriptionStatus.QUEUED, "progress": None, "started_at": None}


def back_to_queue(run: Started) -> bool:
    """processing -> queued while the job waits for a retry; partial segments and the start go (the API
    showed a queued transcription with a started_at)."""
    with db.atomic():
        updated = _still_processing(run, **_QUEUED_AGAIN)
        if updated:
            Segment.delete().where(Segment.transcription == run.id).execute()
        return updated


def handed_back(public_id: str) -> bool:
    """processing -> queued for a run its worker stopped to hand the job back (jobs.worker): the API
    showed it `processing`, with the progress of a run that was over, until a worker started it again.

    Called before the job is queued again, so no later run can own the transcription yet."""
    with db.connection_context(), write_transaction():
        row = Transcription.get_or_none(
            (Transcription.public_id == public_id) & (Transcription.status == TranscriptionStatus.PROCESSING)
        )
        if row is None:
            return False
        Transcription.update(**_QUEUED_AGAIN).where(
            (Transcription.id == row.id) & (Transcription.status == TranscriptionStatus.PROCESSING)
        ).execute()
        Segment.delete().where(Segment.transcription == row.id).execute()
        return True


def discard(run: Started) -> None:
    """Remove what a canceled run stored; a transcription another run took over, or that completed
    or failed meanwhile, keeps its segments (a deleted one lost them with its row)."""
    canceled = Transcription.select(Transcription.id).where(
        (Transcription.id == run.id) & (Transcription.status == TranscriptionStatus.CANCELED)
    )
    Segment.delete().where(Segment.transcription.in_(canceled)).execute()


def status_of(public_id: str) -> str | None:
    row = Transcription.select(Transcription.status).where(Transcription.public_id == public_id).first()
    return row.status if row else None
