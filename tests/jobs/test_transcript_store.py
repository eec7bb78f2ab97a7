"""The job's database writes on both databases: text no database could hold is stored, not fatal."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.db import db, init_db
from api.models import Segment, Transcription, TranscriptionStatus
from api.services.orgs import create_org
from cliptext.settings import Settings
from inference.types import Segment as EngineSegment
from inference.types import Word
from jobs import transcript_store
from tests.api.postgres_admin import fresh_database
from tests.seed import completed_upload


@pytest.fixture(params=["sqlite", "postgres"])
def queued(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A queued transcription in a fresh database; its public id."""
    with fresh_database(request.param, tmp_path, "ct_store_") as url:
        monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
        settings = dataclasses.replace(Settings.from_env(), database_url=url)
        init_db(settings, migrate=True)
        with db.connection_context():
            org, _, _ = create_org("store", "store@example.com", "pro")
            upload = completed_upload(org, "noise.mp3", duration=30.0)
            row = Transcription.create(organization=org, upload=upload, status=TranscriptionStatus.QUEUED)
        yield row.public_id
        db.close()


def test_nul_decoded_from_the_model_is_stored_as_a_replacement_character(queued: str) -> None:
    with db.connection_context():
        run = transcript_store.start(queued)
        assert run is not None
        segment = EngineSegment(
            id=0, seek=0, start=0.0, end=2.0, text=" noise\x00here", tokens=(50364, 0, 50464),
            avg_logprob=-1.5, compression_ratio=1.2, no_speech_prob=0.4, temperature=0.0,
            words=(Word(0.0, 1.0, " noise\x00", 0.5), Word(1.0, 2.0, "here", 0.6)),
        )  # fmt: skip
        assert transcript_store.save_segment(run, 0, segment, progress=0.5)
        assert transcript_store.complete(run, " noise\x00here", 2.0, "en")
        row = Transcription.get(Transcription.public_id == queued)
        stored = Segment.get(Segment.transcription == row.id)
    assert row.status == TranscriptionStatus.COMPLETED
    assert row.text == stored.text == " noise\ufffdhere"
    assert stored.words[0]["word"] == " noise\x00"  # JSON escapes it: stored as sent


def test_a_failure_message_holding_nul_is_stored(queued: str) -> None:
    with db.connection_context():
        run = transcript_store.start(queued)
        assert transcript_store.fail(run.id, "AUDIO_DECODE_ERROR", "bad header in track \x00\x01", run)
        row = Transcription.get(Transcription.public_id == queued)
    assert row.status == TranscriptionStatus.FAILED
    assert row.error_message == "bad header in track \ufffd\x01"


def test_a_run_sent_back_to_the_queue_keeps_no_start(queued: str) -> None:
    """Waiting for its retry, the transcription is queued: the API showed it with the failed run's
    started_at."""
    with db.connection_context():
        run = transcript_store.start(queued)
        assert run is not None
        assert transcript_store.back_to_queue(run)
        row = Transcription.get(Transcription.public_id == queued)
        assert (row.status, row.started_at, row.progress) == (TranscriptionStatus.QUEUED, None, None)
        again = transcript_store.start(queued)
        assert again is not None and Transcription.get_by_id(row.id).started_at is not None
