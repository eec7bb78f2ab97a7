"""Races between requests on one upload, found by a concurrency hunt on PostgreSQL (helper-24).

Each test forces the interleaving that went wrong by pausing one request at the point where the other
must come in (two app instances, as two API processes), then checks the rows and the stored bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from pathlib import Path

import pytest

import api.services.transcriptions as transcription_service
import api.services.uploads as uploads_service
from api.models import Transcription, Upload, utcnow
from api.services.uploads import purge_expired
from tests.api.helpers import JFK_MP3, local_path, put_file, upload_file

PAUSE = 0.5


def transcribe(client, headers, upload_id: str):
    return client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)


def stored_files(tmp_path: Path) -> list[Path]:
    storage = tmp_path / "storage"
    return [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []


def run_together(*calls) -> list:
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_a_transcription_created_while_the_last_one_is_deleted(app, make_app, new_org, tmp_path, monkeypatch):
    """The delete has found no other transcription and is removing the upload when the create comes:
    the create waits for it and answers 404 (it had inserted against the doomed upload: a 500, or a
    202 for audio about to be deleted)."""
    _, headers = new_org("pro")
    other = make_app()
    client = app.test_client()
    upload_id = upload_file(client, headers, JFK_MP3)
    first = transcribe(client, headers, upload_id).get_json()["id"]
    removing = threading.Event()
    real_retire_upload = transcription_service.retire_upload

    def slow_retire_upload(state, upload):
        removing.set()
        threading.Event().wait(PAUSE)
        real_retire_upload(state, upload)

    monkeypatch.setattr(transcription_service, "retire_upload", slow_retire_upload)

    def create_when_removing():
        assert removing.wait(10)
        return transcribe(other.test_client(), headers, upload_id)

    deleted, created = run_together(
        lambda: client.delete(f"/v1/transcriptions/{first}", headers=headers), create_when_removing
    )
    assert deleted.status_code == 204
    assert created.status_code == 404, created.get_data(as_text=True)
    assert created.get_json()["error"]["code"] == "NOT_FOUND"
    with app.app_context():
        assert Upload.select().count() == 0 and Transcription.select().count() == 0
    assert stored_files(tmp_path) == []


def test_the_last_two_transcriptions_deleted_at_once_remove_the_upload(
    app, make_app, new_org, tmp_path, monkeypatch
):
    """Each delete had seen the other's transcription still there and kept the upload: row and bytes
    left for good (no request can reach a completed upload without transcriptions)."""
    _, headers = new_org("pro")
    other = make_app()
    client = app.test_client()
    upload_id = upload_file(client, headers, JFK_MP3)
    ids = [transcribe(client, headers, upload_id).get_json()["id"] for _ in range(2)]
    both_deleted = threading.Barrier(2, timeout=PAUSE)  # with the upload locked the second never comes
    real_delete_instance = Transcription.delete_instance

    def delete_then_wait(self, *args, **kwargs):
        done = real_delete_instance(self, *args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_deleted.wait()
        return done

    monkeypatch.setattr(Transcription, "delete_instance", delete_then_wait)
    answers = run_together(
        lambda: client.delete(f"/v1/transcriptions/{ids[0]}", headers=headers),
        lambda: other.test_client().delete(f"/v1/transcriptions/{ids[1]}", headers=headers),
    )
    assert [a.status_code for a in answers] == [204, 204]
    with app.app_context():
        assert Upload.select().count() == 0 and Transcription.select().count() == 0
    assert stored_files(tmp_path) == []


def test_an_upload_purged_while_its_bytes_come_in(app, new_org, tmp_path, monkeypatch):
    """The PUT claimed the URL just before it expired and was still streaming when the purge ran:
    it answers 404 and removes what it wrote (it was a 500, and the file stayed with no row)."""
    _, headers = new_org("pro")
    client = app.test_client()
    body = {"filename": "talk.mp3", "content_type": "audio/mpeg", "size": 3}
    presigned = client.post("/v1/uploads/presigned", json=body, headers=headers).get_json()
    state = app.extensions["cliptext"]
    real_write = type(state.storage).write_stream

    def purged_meanwhile(self, key, stream, limit):
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
        assert purge_expired(state) == 1  # what `flask uploads purge-expired` runs
        return real_write(self, key, stream, limit)  # the rest of the body arrives after it

    monkeypatch.setattr(type(state.storage), "write_stream", purged_meanwhile)
    response = client.put(local_path(presigned["url"]), data=b"abc")
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "expired while its bytes were sent" in response.get_json()["error"]["message"]
    with app.app_context():
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []


@pytest.mark.parametrize("purged", ["after the probe", "before the probe"])
def test_an_upload_purged_while_it_is_being_completed(app, new_org, tmp_path, monkeypatch, purged):
    """Its URL expired during complete's checks and the purge took it: 404, nothing left. After the
    probe it was a 500 (the row vanished under the final read); between finding the bytes and the
    probe opening them, UNSUPPORTED_MEDIA for a file that was fine."""
    _, headers = new_org("pro")
    client = app.test_client()
    upload_id = put_file(client, headers, JFK_MP3)
    state = app.extensions["cliptext"]
    real_verify = uploads_service.verify_media

    def purge() -> None:
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
        assert purge_expired(state) == 1

    def verify_while_purged(path, max_seconds):
        if purged == "before the probe":
            purge()
        duration = real_verify(path, max_seconds)
        if purged == "after the probe":
            purge()
        return duration

    monkeypatch.setattr(uploads_service, "verify_media", verify_while_purged)
    response = client.post("/v1/uploads/complete", json={"upload_id": upload_id}, headers=headers)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "expired" in response.get_json()["error"]["message"]
    with app.app_context():
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []


def test_complete_sees_the_bytes_gone_before_the_purge_commits(app, make_app, new_org, tmp_path, monkeypatch):
    """The purge (another process) has removed the bytes of an upload that expired during complete's
    checks, and not yet committed the row's removal, when the probe finds them gone: still the expired
    upload's 404 (the uncommitted row made it UPLOAD_MISSING; helper-28)."""
    _, headers = new_org("pro")
    other = make_app()
    client = app.test_client()
    upload_id = put_file(client, headers, JFK_MP3)
    state = app.extensions["cliptext"]
    real_delete, real_verify = type(state.storage).delete, uploads_service.verify_media
    bytes_gone = threading.Event()

    def delete_then_pause(self, key):
        real_delete(self, key)
        if threading.current_thread().name == "purge":
            bytes_gone.set()
            threading.Event().wait(PAUSE)  # then the row, then the commit

    def purge_when_expired() -> None:
        threading.Event().wait(2 * PAUSE)  # past the expiry, natural this time
        with other.app_context():
            assert purge_expired(other.extensions["cliptext"]) == 1

    purge = threading.Thread(target=purge_when_expired, name="purge")

    def verify_once_the_bytes_are_gone(path, max_seconds):
        purge.start()
        assert bytes_gone.wait(10)
        return real_verify(path, max_seconds)

    monkeypatch.setattr(type(state.storage), "delete", delete_then_pause)
    monkeypatch.setattr(uploads_service, "verify_media", verify_once_the_bytes_are_gone)
    with app.app_context():  # valid when complete starts, expired when the purge runs
        Upload.update(expires_at=utcnow() + dt.timedelta(seconds=PAUSE)).execute()
    response = client.post("/v1/uploads/complete", json={"upload_id": upload_id}, headers=headers)
    purge.join(10)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "expired" in response.get_json()["error"]["message"]
    with app.app_context():
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []


def test_the_purge_keeps_an_upload_completed_after_it_was_listed(app, new_org, tmp_path, monkeypatch):
    """The purge lists the expired uploads, then removes them one by one: one completed (and
    transcribed) in between stays, with its bytes (it had been deleted under its transcription)."""
    _, headers = new_org("pro")
    client = app.test_client()
    upload_id = upload_file(client, headers, JFK_MP3)
    with app.app_context():
        Upload.update(status="uploaded", expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
    real_locked = uploads_service.locked

    def completed_meanwhile(query):
        Upload.update(status="completed").execute()  # complete's final write, between list and removal
        return real_locked(query)

    monkeypatch.setattr(uploads_service, "locked", completed_meanwhile)
    assert purge_expired(app.extensions["cliptext"]) == 0
    with app.app_context():
        assert [u.public_id for u in Upload.select()] == [upload_id]
    assert len(stored_files(tmp_path)) == 1
