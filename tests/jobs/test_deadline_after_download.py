"""The gRPC call's deadline counts the audio's download (jobs.timeouts.remaining_deadline).

RQ's job timeout runs from the job's start; the deadline was computed before local_copy, which for S3
downloads the file first, so a slow download let the call outlive RQ's timeout: RQ killed the job
instead of the call ending TIMEOUT. Now the call gets what the download left of the budget (at least
1 s), and a download that took all of it fails TIMEOUT without calling the servers.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api.db import db, init_db
from api.models import Transcription, TranscriptionStatus
from api.services.orgs import create_org
from api.storage import LocalStorage
from cliptext.settings import Settings
from jobs import transcribe
from jobs.timeouts import remaining_deadline
from tests.media import sine, write_wav
from tests.seed import completed_upload

DOWNLOAD_SECONDS = 1.5


def test_the_call_gets_what_the_download_left_of_the_budget() -> None:
    assert remaining_deadline(60.0, since=100.0, now=100.0) == 60.0
    assert remaining_deadline(60.0, since=100.0, now=112.5) == 47.5


def test_a_nearly_spent_budget_leaves_the_call_one_second() -> None:
    assert remaining_deadline(60.0, since=0.0, now=59.9) == 1.0


def test_a_spent_budget_leaves_the_call_nothing() -> None:
    assert remaining_deadline(60.0, since=0.0, now=60.0) is None
    assert remaining_deadline(60.0, since=0.0, now=75.0) is None


class SlowLocalStorage(LocalStorage):
    """Local files that take DOWNLOAD_SECONDS to reach, as a large S3 object does to download."""

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        time.sleep(DOWNLOAD_SECONDS)
        with super().local_copy(key) as path:
            yield path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A queued transcription of real audio in slow storage, a budget of 1 s, no inference server."""
    storage = tmp_path / "storage"
    values = {
        "CLIPTEXT_DATA_DIR": str(tmp_path / "data"),
        "CLIPTEXT_SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "REDIS_URL": os.environ.get("CLIPTEXT_TEST_JOBS_REDIS", "redis://127.0.0.1:6379/5"),
        "STORAGE_URL": f"file://{storage}",
        "INFERENCE_ADDR": f"127.0.0.1:{_free_port()}",  # a call would find nothing there
        "CLIPTEXT_JOB_TIMEOUT_BASE": "1",
        "CLIPTEXT_JOB_TIMEOUT_PER_AUDIO_SECOND": "0",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(transcribe, "open_storage", lambda url, *_: SlowLocalStorage(storage))
    init_db(Settings.from_env(), migrate=True)
    with db.connection_context():
        org, _, _ = create_org("deadline", "deadline@example.com", "pro")
        upload = completed_upload(org, "speech.wav", duration=3.0)
        target = SlowLocalStorage(storage).path(upload.storage_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(write_wav(tmp_path / "speech.wav", sine(3.0), 16000).read_bytes())
        row = Transcription.create(organization=org, upload=upload, status=TranscriptionStatus.QUEUED)
    yield row.public_id
    db.close()


def test_a_download_that_spends_the_budget_fails_timeout_without_a_call(queued: str) -> None:
    """Budget 1 s, download 1.5 s: TIMEOUT at once, not retried. Before, the call still went out with
    the whole 1 s (here: no server, so INFERENCE_UNAVAILABLE and a retry)."""
    assert transcribe.run_transcription(queued) is None  # no rq.Retry
    with db.connection_context():
        row = Transcription.get(Transcription.public_id == queued)
    assert (row.status, row.error_code) == (TranscriptionStatus.FAILED, "TIMEOUT"), row.error_message
    assert "time limit" in row.error_message
