"""What a delete leaves behind (a data-protection officer's review): no copy of a deleted transcript's
words, nor of the customer's file name, stays anywhere in the database's files.

SQLite runs in WAL mode: secure_delete overwrote a deleted row in the database file, but the write-ahead
log kept every page as it had been written (the segments, the text, the upload's file name) for as long
as the API's pooled connections stayed open.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from api.models import Segment, Transcription, TranscriptionStatus, Upload, UploadStatus, utcnow
from api.services.uploads import UNUSED_RETENTION, purge_expired
from tests.api.helpers import JFK_MP3, presign, upload_file

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SPOKEN = "Mrs Quokka's card number is four one one one"
FILE_NAME = "call-with-Mrs-Quokka.mp3"


def database_files_holding(tmp_path: Path, *needles: str) -> dict[str, list[str]]:
    """Each file of the test's SQLite database (api.db, its -wal and -shm) that holds any of `needles`."""
    found = {}
    for path in sorted(tmp_path.glob("api.db*")):
        data = path.read_bytes()
        held = [needle for needle in needles if needle.encode() in data]
        if held:
            found[path.name] = held
    return found


def transcribed(client, app, headers: dict[str, str]) -> tuple[str, str]:
    """A completed transcription of an upload named FILE_NAME whose segments say SPOKEN, written as the
    worker writes them; (transcription id, upload id)."""
    upload_id = upload_file(client, headers, JFK_MP3, filename=FILE_NAME)
    created = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)
    assert created.status_code == 202, created.get_json()
    txn_id = created.get_json()["id"]
    with app.app_context():
        row = Transcription.get(Transcription.public_id == txn_id)
        for index in range(3):
            Segment.create(transcription=row, index=index, start=index, end=index + 1, text=f" {SPOKEN}")
        Transcription.update(status=TranscriptionStatus.COMPLETED, text=SPOKEN * 3).where(
            Transcription.id == row.id
        ).execute()
    return txn_id, upload_id


@sqlite_only
def test_a_deleted_transcripts_words_and_file_name_are_gone_from_the_database_files(
    client, app, new_org, tmp_path
):
    _, headers = new_org("pro")
    txn_id, _ = transcribed(client, app, headers)
    assert database_files_holding(tmp_path, SPOKEN, FILE_NAME)  # the check can see them

    assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204

    assert database_files_holding(tmp_path, SPOKEN, FILE_NAME) == {}
    gone = client.get(f"/v1/transcriptions/{txn_id}?format=srt", headers=headers)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "NOT_FOUND"


@sqlite_only
def test_a_deleted_uploads_file_name_is_gone_from_the_database_files(client, new_org, tmp_path):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3, filename=FILE_NAME)
    assert database_files_holding(tmp_path, FILE_NAME)

    assert client.delete(f"/v1/uploads/{upload_id}", headers=headers).status_code == 204

    assert database_files_holding(tmp_path, FILE_NAME) == {}


def test_a_deleted_uploads_row_does_not_keep_the_file_name_until_the_purge(client, app, new_org):
    """The canceled row stays until its URL expires (a late PUT is refused by it), and the purge runs
    from cron: the customer's file name stayed in it all that time, though nothing shows it again."""
    _, headers = new_org("pro")
    upload_id = presign(client, headers, b"\0" * 1000, filename=FILE_NAME)["id"]

    assert client.delete(f"/v1/uploads/{upload_id}", headers=headers).status_code == 204

    with app.app_context():
        row = Upload.get(Upload.public_id == upload_id)
        assert row.status == UploadStatus.CANCELED
        assert "Quokka" not in row.filename
    again = client.delete(f"/v1/uploads/{upload_id}", headers=headers)
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "NOT_FOUND"


@sqlite_only
def test_an_upload_the_purge_removed_leaves_no_file_name_in_the_database_files(
    client, app, new_org, tmp_path
):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3, filename=FILE_NAME)
    with app.app_context():
        long_ago = utcnow() - UNUSED_RETENTION - timedelta(minutes=1)
        Upload.update(completed_at=long_ago).where(Upload.public_id == upload_id).execute()
        assert purge_expired(app.extensions["cliptext"]) == 1

    assert database_files_holding(tmp_path, FILE_NAME) == {}


@sqlite_only
def test_a_reader_left_open_holds_back_neither_the_delete_nor_other_writes(client, app, new_org, tmp_path):
    """A read transaction left open (a backup, Litestream, an operator's sqlite3 shell) made the delete's
    checkpoint wait SQLite's busy timeout (10 s), and every other writer with it. The delete now leaves
    the log to the purge when a reader holds it; the purge, which may wait, erases it."""
    import sqlite3
    import time

    _, headers = new_org("pro")
    txn_id, _ = transcribed(client, app, headers)
    reader = sqlite3.connect(tmp_path / "api.db")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM segment").fetchone()  # a read snapshot, held
        started = time.monotonic()
        assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204
        assert time.monotonic() - started < 5, "the delete waited for the reader (busy timeout 10 s)"
    finally:
        reader.close()
    with app.app_context():
        purge_expired(app.extensions["cliptext"])
    assert database_files_holding(tmp_path, SPOKEN, FILE_NAME) == {}
