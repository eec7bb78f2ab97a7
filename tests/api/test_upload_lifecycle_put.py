"""The signed local PUT when something else happens at its last step: a complete arriving, the upload
completed by another process, the database failing once the bytes are stored (review s7 and s5).

Real app, real database (SQLite and PostgreSQL) and Redis; the interleaving is forced by pausing the
PUT right after its bytes are in place, or by refusing the database's statements about uploads from
that moment (what a blip of the database looks like to the app).
"""

from __future__ import annotations

import threading
import time

import peewee as pw

from api.models import Upload, utcnow
from tests.api.helpers import JFK_MP3, local_path, presign, stored_files

PAUSE = 0.5


def put(app, presigned: dict, data: bytes):
    return app.test_client().put(local_path(presigned["url"]), data=data, headers=presigned["headers"])


def complete(client, headers: dict[str, str], upload_id: str):
    return client.post("/v1/uploads/complete", json={"upload_id": upload_id}, headers=headers)


def storage_key(app, upload_id: str) -> str:
    with app.app_context():
        return Upload.get(Upload.public_id == upload_id).storage_key


def test_complete_during_the_last_step_of_a_put_keeps_the_bytes(app, new_org, tmp_path, monkeypatch):
    """complete comes while the PUT's bytes are in place and the PUT has not yet recorded them (a client
    whose PUT timed out on its side): the upload was completed, then the PUT deleted its bytes and
    answered 404, and a transcription of it was accepted for audio that no longer existed. Now the PUT
    succeeds and the bytes stay; complete either waits its turn (409, Retry-After) or succeeds."""
    _, headers = new_org("pro")
    client = app.test_client()
    data = JFK_MP3.read_bytes()
    presigned = presign(client, headers, data)
    storage_class = type(app.extensions["cliptext"].storage)
    real_write = storage_class.write_stream
    in_place = threading.Event()

    def write_then_pause(self, key, stream, limit):
        written = real_write(self, key, stream, limit)
        in_place.set()
        time.sleep(PAUSE)  # the PUT records the bytes after this
        return written

    monkeypatch.setattr(storage_class, "write_stream", write_then_pause)
    answers: dict = {}
    sender = threading.Thread(target=lambda: answers.setdefault("put", put(app, presigned, data)))
    sender.start()
    assert in_place.wait(10)
    early = complete(client, headers, presigned["id"])
    sender.join(30)

    answer = answers["put"]
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert early.status_code in (200, 409), early.get_data(as_text=True)
    if early.status_code == 409:  # the PUT held the upload: a clear "not yet", with when to retry
        assert early.get_json()["error"]["code"] == "CONFLICT"
        assert early.headers["Retry-After"] == "5"
    done = complete(client, headers, presigned["id"])
    assert done.status_code == 200 and done.get_json()["status"] == "completed", done.get_json()
    key = storage_key(app, presigned["id"])
    assert stored_files(tmp_path) == [key]
    created = client.post("/v1/transcriptions", json={"upload_id": presigned["id"]}, headers=headers)
    assert created.status_code == 202, created.get_json()
    assert (tmp_path / "storage" / key).read_bytes() == data


def test_a_put_finding_its_upload_completed_keeps_the_bytes(app, new_org, tmp_path, monkeypatch):
    """Between the bytes put in place and their record, the upload was completed (by an API process that
    checked those very bytes): the PUT deleted them as if the upload had expired and answered 404. Now
    it answers 200 with the completed upload, whose bytes stay."""
    _, headers = new_org("pro")
    client = app.test_client()
    data = JFK_MP3.read_bytes()
    presigned = presign(client, headers, data)
    storage_class = type(app.extensions["cliptext"].storage)
    real_write = storage_class.write_stream

    def write_then_completed(self, key, stream, limit):
        written = real_write(self, key, stream, limit)
        Upload.update(  # complete's final write, from another process
            status="completed", received_size=written, duration=11.0, completed_at=utcnow()
        ).where(Upload.storage_key == key).execute()
        return written

    monkeypatch.setattr(storage_class, "write_stream", write_then_completed)
    answer = put(app, presigned, data)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["status"] == "completed"
    key = storage_key(app, presigned["id"])
    assert stored_files(tmp_path) == [key]
    created = client.post("/v1/transcriptions", json={"upload_id": presigned["id"]}, headers=headers)
    assert created.status_code == 202, created.get_json()
    assert (tmp_path / "storage" / key).read_bytes() == data


def test_a_put_answered_503_after_its_bytes_were_stored_can_be_sent_again(
    app, new_org, tmp_path, monkeypatch
):
    """The database fails right after the PUT's bytes are stored: 503 with Retry-After, which says
    "send it again"; the same PUT was then refused (409, the URL already used) and the free plan's one
    upload slot stayed taken for an hour. Now the PUT sent again succeeds, complete too, and the slot
    is free once the upload is completed."""
    _, headers = new_org("free")  # one concurrent upload
    client = app.test_client()
    data = JFK_MP3.read_bytes()
    presigned = presign(client, headers, data)
    storage_class = type(app.extensions["cliptext"].storage)
    real_write, real_execute = storage_class.write_stream, pw.Database.execute_sql
    database_down = threading.Event()

    def execute_sql(self, sql, params=None, *args, **kwargs):
        if database_down.is_set() and "upload" in sql:
            raise pw.OperationalError("the database is unavailable (injected)")
        return real_execute(self, sql, params, *args, **kwargs)

    def write_then_database_down(self, key, stream, limit):
        written = real_write(self, key, stream, limit)
        database_down.set()
        return written

    monkeypatch.setattr(pw.Database, "execute_sql", execute_sql)
    monkeypatch.setattr(storage_class, "write_stream", write_then_database_down)
    failed = put(app, presigned, data)
    assert failed.status_code == 503, failed.get_data(as_text=True)
    assert failed.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert failed.headers["Retry-After"] == "5"

    database_down.clear()  # back, as the Retry-After said
    monkeypatch.setattr(storage_class, "write_stream", real_write)
    again = put(app, presigned, data)
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["status"] == "uploaded" and again.get_json()["size"] == len(data)
    done = complete(client, headers, presigned["id"])
    assert done.status_code == 200 and done.get_json()["status"] == "completed", done.get_json()
    assert stored_files(tmp_path) == [storage_key(app, presigned["id"])]
    assert presign(client, headers, data)["id"] != presigned["id"]  # the slot is free again
    # and a URL that delivered its bytes still takes no second PUT
    reused = put(app, presigned, b"x" * len(data))
    assert reused.status_code == 409 and reused.get_json()["error"]["code"] == "CONFLICT"
