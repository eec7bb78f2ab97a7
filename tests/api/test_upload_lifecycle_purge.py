"""What `flask uploads purge-expired` removes besides expired reservations (review s4 and s1): completed
uploads no transcription uses once UNUSED_RETENTION has passed, and the temp and lock files that
processes killed mid-write left in local storage, never those a live writer holds.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import api.services.uploads as uploads_service
from api.db import db, locked, write_transaction
from api.models import Transcription, Upload, utcnow
from api.services.uploads import UNUSED_RETENTION, URL_TTL, purge_expired
from tests.api.helpers import JFK_MP3, app_config, stored_files, upload_file

ROOT = Path(__file__).resolve().parents[2]
PAUSE = 0.5

# an API process killed (-9) once a multipart upload is stored and completed, before its transcription
# is created: the client never learns the upload's id
KILLED_BEFORE_TRANSCRIPTION = r"""
import io, json, os, signal, sys
import api.services.transcriptions
from api import create_app

config, headers, audio = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
client = create_app(config).test_client()
api.services.transcriptions.create = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
data = open(audio, "rb").read()
client.post("/v1/transcriptions", headers=headers, content_type="multipart/form-data",
            data={"file": (io.BytesIO(data), "jfk.mp3", "audio/mpeg")})
"""


def transcribe(client, headers: dict[str, str], upload_id: str) -> str:
    response = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def completed_long_ago(app, *upload_ids: str) -> None:
    """As if they had been completed just over UNUSED_RETENTION ago."""
    then = utcnow() - UNUSED_RETENTION - dt.timedelta(minutes=1)
    with app.app_context():
        Upload.update(created_at=then, expires_at=then, completed_at=then).where(
            Upload.public_id.in_(upload_ids)
        ).execute()


def test_completed_uploads_no_transcription_uses_go_after_the_retention(app, new_org, tmp_path):
    """Presigned, PUT and completed but never transcribed, and a multipart upload whose process died
    before its transcription was created: kept for ever, rows and audio, with no endpoint to delete
    them. Now they go once UNUSED_RETENTION has passed; one a transcription uses, and one completed
    recently, stay."""
    _, headers = new_org("pro")
    client = app.test_client()
    unused = upload_file(client, headers, JFK_MP3)
    used = upload_file(client, headers, JFK_MP3)
    transcribe(client, headers, used)
    recent = upload_file(client, headers, JFK_MP3)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_TRANSCRIPTION]
        + [json.dumps(app_config(app)), json.dumps(headers), str(JFK_MP3)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    with app.app_context():
        orphan = Upload.get(Upload.public_id.not_in([unused, used, recent]))
        assert orphan.status == "completed" and not orphan.transcriptions.exists()
    completed_long_ago(app, unused, used, orphan.public_id)

    result = app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 2" in result.output, result.output
    with app.app_context():
        kept = {u.public_id: u.storage_key for u in Upload.select()}
        assert Transcription.select().count() == 1
    assert sorted(kept) == sorted([used, recent])
    assert stored_files(tmp_path) == sorted(kept.values())


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite: see below
def test_an_upload_transcribed_while_the_purge_waits_for_it_stays(
    app, new_org, tmp_path, monkeypatch, database_url
):
    """The purge listed an unused upload; a transcription of it was being created (the upload row
    locked, the transcription inserted, not yet committed) when the purge came to lock it. PostgreSQL's
    re-check of the row it waited for does not run the "no transcription" subquery again: the purge
    asks again once it holds the lock, and the upload stays with its audio. (On SQLite the race cannot
    happen: the purge's transaction holds the database's one write lock from its start.)"""
    _, headers = new_org("pro")
    client = app.test_client()
    upload_id = upload_file(client, headers, JFK_MP3)
    transcription_id = transcribe(client, headers, upload_id)
    with app.app_context():
        org_id = Upload.get(Upload.public_id == upload_id).organization_id
        Transcription.delete().execute()  # keep the row, as if never transcribed (its audio stays)
    completed_long_ago(app, upload_id)
    inserted, commit = threading.Event(), threading.Event()

    def create_transcription() -> None:  # what transcriptions.create does, held before its commit
        with app.app_context(), db.connection_context(), write_transaction():
            upload = locked(Upload.select().where(Upload.public_id == upload_id)).first()
            Transcription.create(public_id=transcription_id, organization=org_id, upload=upload)
            inserted.set()
            commit.wait(10)

    creator = threading.Thread(target=create_transcription)
    real_locked = uploads_service.locked

    def created_meanwhile(query):
        if not creator.is_alive() and not inserted.is_set():
            creator.start()
            assert inserted.wait(10)
            threading.Timer(PAUSE, commit.set).start()  # commits while the purge waits for the row
        return real_locked(query)

    monkeypatch.setattr(uploads_service, "locked", created_meanwhile)
    with app.app_context():
        assert purge_expired(app.extensions["cliptext"]) == 0
    assert inserted.is_set(), "the purge never came to lock the unused upload"
    creator.join(10)
    with app.app_context():
        assert [u.public_id for u in Upload.select()] == [upload_id]
        assert Transcription.select().count() == 1
    assert len(stored_files(tmp_path)) == 1


def test_the_purge_sweeps_stale_temp_and_lock_files_only(app, tmp_path):
    """Temp and lock files no upload row names any more (written by an older version, with a random
    name, or whose row went some other way) go once as old as an upload URL; a recent one, and an
    old one a live writer still holds (a PUT streaming for over an hour), stay."""
    folder = tmp_path / "storage" / "uploads" / "org_sweep"
    folder.mkdir(parents=True)
    old = time.time() - URL_TTL.total_seconds() - 60
    stale = [folder / ".part-x8Hq2_k1", folder / ".part-upl_gone.ab12cd", folder / ".lock-upl_gone"]
    fresh, held = folder / ".part-upl_new.ef34gh", folder / ".part-upl_slow.ij56kl"
    for path in (*stale, fresh, held):
        path.write_bytes(b"half an upload")
    for path in (*stale, held):
        os.utime(path, (old, old))
    kept_audio = folder / "upl_kept"
    kept_audio.write_bytes(b"audio")
    os.utime(kept_audio, (old, old))
    writer = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)
        with app.app_context():
            assert purge_expired(app.extensions["cliptext"]) == 0  # no upload rows
    finally:
        os.close(writer)
    assert sorted(p.name for p in folder.iterdir()) == sorted([fresh.name, held.name, kept_audio.name])
