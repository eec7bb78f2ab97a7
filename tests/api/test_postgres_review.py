"""The API on PostgreSQL under concurrency: what SQLite's single writer and lax column types hide.

Each test runs on a fresh PostgreSQL database (the fixtures of tests/api/conftest.py). Where a request
must be caught mid-transaction, another connection holds a lock it needs, and the test waits until
PostgreSQL shows the request's backend waiting for it: no sleeps, no timing.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from api.db import db
from api.models import Segment, Transcription, Upload, UploadStatus
from tests.api.helpers import JFK_MP3
from tests.seed import completed_upload

postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def wait_for_lock_waiters(database_url: str, count: int) -> None:
    """Until `count` backends of the database wait for a lock (row, table or advisory)."""
    name = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    deadline = time.monotonic() + 60
    try:
        with conn.cursor() as cursor:
            while True:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (name,),
                )
                if cursor.fetchone()[0] >= count:
                    return
                assert time.monotonic() < deadline, f"fewer than {count} backends ever waited for a lock"
                time.sleep(0.02)
    finally:
        conn.close()


def presign(client, headers):
    body = {"filename": "a.mp3", "content_type": "audio/mpeg", "size": 1000}
    return client.post("/v1/uploads/presigned", headers=headers, json=body)


@postgres_only
def test_a_multipart_part_type_longer_than_its_column_is_not_a_500(client, new_org, app):
    """PostgreSQL refuses a varchar(100) value of 101 characters (SQLite stores it): the part's
    Content-Type, which no one validates, was stored as the upload's content type."""
    _, headers = new_org("pro")
    audio = JFK_MP3.read_bytes()  # small: the test client keeps it in memory
    long_type = "audio/" + "x" * 120
    response = client.post(
        "/v1/transcriptions",
        headers=headers,
        data={"file": (io.BytesIO(audio), "speech.mp3", long_type)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    upload_id = response.get_json()["upload_id"]
    with app.app_context():
        upload = Upload.get(Upload.public_id == upload_id)
    assert upload.status == UploadStatus.COMPLETED
    assert len(upload.content_type) <= Upload.content_type.max_length


@postgres_only
def test_the_upload_cap_holds_when_the_reservation_lock_expires_during_the_insert(
    app, new_org, redis_conn, test_ns, database_url
):
    """The Redis lock around count-then-insert expires after LOCK_TIMEOUT_S; an insert waiting longer
    (a migration locking the table, a stalled server) had its release fail (a 500 for a reservation
    committed, its slot held for an hour) while a second request counted and inserted beside it."""
    org, headers = new_org("free")  # one concurrent upload
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE upload IN SHARE MODE")  # as CREATE INDEX on the table does
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(presign, app.test_client(), headers)
            wait_for_lock_waiters(database_url, 1)
            redis_conn.delete(f"{test_ns}:lock:uploads:{org.public_id}")  # its time ran out meanwhile
            second = pool.submit(presign, app.test_client(), headers)
            wait_for_lock_waiters(database_url, 2)
            blocker.commit()
            statuses = sorted([first.result(60).status_code, second.result(60).status_code])
    finally:
        blocker.close()
    assert statuses == [201, 429]
    with app.app_context():
        assert Upload.select().where(Upload.organization == org.id).count() == 1


@postgres_only
def test_a_delete_while_the_worker_fails_the_job_does_not_deadlock(app, new_org, database_url):
    """The worker's writes lock the transcription row, then its segments (jobs.transcript_store.fail,
    start, back_to_queue); a delete that removed the segments before locking the row waited for the
    worker while the worker waited for it, and PostgreSQL aborted one of them. A delete stops a running
    job itself, so the worker's failure handling runs just as the delete does."""
    org, headers = new_org("pro")
    with app.app_context():
        txn = Transcription.create(organization=org, upload=completed_upload(org), status="processing")
        for index in range(3):
            Segment.create(transcription=txn, index=index, start=index, end=index + 1, text="words")
    worker = psycopg2.connect(database_url)
    try:
        with worker.cursor() as cursor:
            cursor.execute("SET deadlock_timeout = '10ms'")  # a deadlock is found at once, not in 1 s
            # transcript_store.fail's statements in its order: the transcription, then its segments
            cursor.execute("UPDATE transcription SET status = 'failed' WHERE id = %s", (txn.id,))
            with ThreadPoolExecutor(1) as pool:
                deleted = pool.submit(
                    app.test_client().delete, f"/v1/transcriptions/{txn.public_id}", headers=headers
                )
                wait_for_lock_waiters(database_url, 1)
                cursor.execute("DELETE FROM segment WHERE transcription_id = %s", (txn.id,))
                worker.commit()
                response = deleted.result(60)
    finally:
        worker.close()
    assert response.status_code == 204, response.get_json()
    with app.app_context():
        assert not Transcription.select().where(Transcription.id == txn.id).exists()
        assert not Segment.select().where(Segment.transcription == txn.id).exists()


@postgres_only
def test_a_pool_with_no_connection_free_answers_503_not_500(make_app, new_org, database_url):
    """More requests at once than pooled connections (a multipart upload holds one while its body comes
    in): after the pool's timeout peewee raises MaxConnectionsExceeded, a ValueError, which was a 500."""
    _, headers = new_org("pro")
    app = make_app(database_url=f"{database_url}?max_connections=1&timeout=1")
    holding, done = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        db.connect()
        holding.set()
        done.wait(60)
        db.close()

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert holding.wait(60)
        response = app.test_client().get("/v1/transcriptions", headers=headers)
    finally:
        done.set()
        holder.join(60)
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"]
    assert app.test_client().get("/v1/transcriptions", headers=headers).status_code == 200
