"""Transcriptions: create (JSON / multipart) + job, read, list by cursor, delete for good, idempotency."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import Job

from api.models import DeletedTranscription, Segment, Transcription, TranscriptionStatus, Upload, utcnow
from api.queue import JOB_FUNCTION, org_queue
from tests.api.helpers import JFK_MP3, upload_file


def create(client, headers, upload_id, **options):
    return client.post("/v1/transcriptions", json={"upload_id": upload_id, **options}, headers=headers)


def test_create_enqueues_job_and_get(client, app, new_org, redis_conn, test_ns):
    org, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    response = create(
        client, headers, upload_id, language="en", prompt="JFK", webhook_url="https://example.com/hook"
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["id"].startswith("txn_") and body["status"] == "queued"
    assert body["upload_id"] == upload_id
    assert body["options"] == {"language": "en", "prompt": "JFK", "word_timestamps": False}
    assert body["segments"] == [] and body["error"] is None and body["created_at"].endswith("Z")

    queue = Queue(org_queue(f"transcriptions-{test_ns}", org.public_id), connection=redis_conn)
    assert queue.job_ids == [body["id"]]
    job = Job.fetch(body["id"], connection=redis_conn)
    assert job.func_name == JOB_FUNCTION
    assert job.args == (body["id"],)

    got = client.get(f"/v1/transcriptions/{body['id']}", headers=headers)
    assert got.status_code == 200
    assert got.get_json()["status"] == "queued"


def test_completed_failed_and_processing_shapes(client, app, new_org):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    txn_id = create(client, headers, upload_id).get_json()["id"]
    with app.app_context():
        row = Transcription.get(Transcription.public_id == txn_id)
        row.status, row.progress, row.started_at = TranscriptionStatus.PROCESSING, 0.5, utcnow()
        row.save()
    body = client.get(f"/v1/transcriptions/{txn_id}", headers=headers).get_json()
    assert body["status"] == "processing" and body["progress"] == 0.5

    with app.app_context():
        # what a worker writes; a re-run upserts on (transcription, index)
        for _ in range(2):
            for index, (start, end, text) in enumerate([(0.0, 5.0, " And so"), (5.0, 11.0, " my fellow")]):
                Segment.insert(transcription=row, index=index, start=start, end=end, text=text).on_conflict(
                    conflict_target=[Segment.transcription, Segment.index],
                    update={Segment.text: text, Segment.start: start, Segment.end: end},
                ).execute()
        row.status, row.text, row.completed_at = TranscriptionStatus.COMPLETED, "And so my fellow", utcnow()
        row.language, row.progress = "en", 1.0
        row.save()
    body = client.get(f"/v1/transcriptions/{txn_id}", headers=headers).get_json()
    assert body["status"] == "completed" and body["text"] == "And so my fellow"
    assert [(s["start"], s["end"], s["text"]) for s in body["segments"]] == [
        (0.0, 5.0, " And so"),
        (5.0, 11.0, " my fellow"),
    ]
    assert body["completed_at"].endswith("Z") and body["duration"] == pytest.approx(11.0, abs=0.5)

    with app.app_context():
        row.status, row.error_code, row.error_message = (
            TranscriptionStatus.FAILED,
            "AUDIO_DECODE_ERROR",
            "bad",
        )
        row.save()
    body = client.get(f"/v1/transcriptions/{txn_id}", headers=headers).get_json()
    assert body["error"] == {"code": "AUDIO_DECODE_ERROR", "message": "bad"}


def test_multipart_create(client, new_org, redis_conn, test_ns):
    org, headers = new_org("pro")
    with open(JFK_MP3, "rb") as handle:
        response = client.post(
            "/v1/transcriptions",
            data={"file": (handle, "jfk.mp3", "audio/mpeg"), "language": "en", "word_timestamps": "true"},
            headers=headers,
        )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["options"]["word_timestamps"] is True
    assert Queue(org_queue(f"transcriptions-{test_ns}", org.public_id), connection=redis_conn).job_ids == [
        body["id"]
    ]


def test_multipart_refusals(client, new_org):
    _, headers = new_org("pro")
    import io

    png = client.post(
        "/v1/transcriptions",
        data={"file": (io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "fake.mp3", "audio/mpeg")},
        headers=headers,
    )
    assert png.status_code == 422 and png.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA"
    txt = client.post("/v1/transcriptions", data={"file": (io.BytesIO(b"hi"), "a.txt")}, headers=headers)
    assert txt.status_code == 422 and txt.get_json()["error"]["details"]["field"] == "file"
    no_file = client.post(
        "/v1/transcriptions", data={"language": "en"}, headers=headers, content_type="multipart/form-data"
    )
    assert no_file.status_code == 422 and no_file.get_json()["error"]["details"]["field"] == "file"


def test_create_refusals(client, new_org):
    _, headers = new_org("pro")
    text = client.post("/v1/transcriptions", data="hello", headers={**headers, "Content-Type": "text/plain"})
    assert text.status_code == 415 and text.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA"
    bad = client.post(
        "/v1/transcriptions",
        json={"upload_id": "upl_x", "language": "English!", "webhook_url": "ftp://x", "extra": 1},
        headers=headers,
    )
    assert bad.status_code == 422
    assert set(bad.get_json()["error"]["details"]["fields"]) == {"language", "webhook_url", "extra"}
    assert create(client, headers, "upl_doesnotexist").status_code == 404
    pending = client.post(
        "/v1/uploads/presigned",
        json={"filename": "a.wav", "content_type": "audio/wav", "size": 10},
        headers=headers,
    ).get_json()
    not_done = create(client, headers, pending["id"])
    assert not_done.status_code == 422 and not_done.get_json()["error"]["code"] == "UPLOAD_MISSING"


def test_list_newest_first_with_cursor_and_filter(client, app, new_org):
    _, headers = new_org("enterprise", custom_rate_limit=1000)
    upload_id = upload_file(client, headers, JFK_MP3)
    ids = [create(client, headers, upload_id).get_json()["id"] for _ in range(5)]
    with app.app_context():
        Transcription.update(status=TranscriptionStatus.COMPLETED).where(
            Transcription.public_id.in_(ids[:2])
        ).execute()
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&starting_after={cursor}" if cursor else "")
        page = client.get(f"/v1/transcriptions?{query}", headers=headers).get_json()
        assert "segments" not in page["data"][0]
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert seen == ids[::-1]
    done = client.get("/v1/transcriptions?status=completed", headers=headers).get_json()
    assert [item["id"] for item in done["data"]] == ids[:2][::-1] and done["has_more"] is False
    for query in ("limit=0", "limit=101", "status=bogus", "starting_after=txn_unknown"):
        response = client.get(f"/v1/transcriptions?{query}", headers=headers)
        assert response.status_code == 422, query


def test_paging_goes_on_past_a_cursor_deleted_meanwhile(client, app, new_org):
    """Deleting each page's items as it comes (or another client deleting the last one seen) must not
    end the walk: the cursor names a transcription that no longer exists."""
    _, headers = new_org("enterprise", custom_rate_limit=1000)
    upload_id = upload_file(client, headers, JFK_MP3)
    ids = [create(client, headers, upload_id).get_json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&starting_after={cursor}" if cursor else "")
        page = client.get(f"/v1/transcriptions?{query}", headers=headers)
        assert page.status_code == 200, page.get_json()
        items = [item["id"] for item in page.get_json()["data"]]
        seen += items
        for txn_id in items:
            assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204
        if not page.get_json()["has_more"]:
            break
        cursor = items[-1]
    assert seen == ids[::-1]
    assert client.get("/v1/transcriptions", headers=headers).get_json()["data"] == []

    # a position is kept a week, then forgotten; another organization never sees it
    other_headers = new_org("pro")[1]
    stranger = client.get(f"/v1/transcriptions?starting_after={ids[0]}", headers=other_headers)
    assert stranger.status_code == 422
    with app.app_context():
        DeletedTranscription.update(deleted_at=utcnow() - timedelta(days=8)).execute()
    last = create(client, headers, upload_file(client, headers, JFK_MP3)).get_json()[
        "id"
    ]  # the first went with its last transcription
    assert client.delete(f"/v1/transcriptions/{last}", headers=headers).status_code == 204
    with app.app_context():
        assert [row.public_id for row in DeletedTranscription.select()] == [last]
    stale = client.get(f"/v1/transcriptions?starting_after={ids[0]}", headers=headers)
    assert stale.status_code == 422 and stale.get_json()["error"]["details"] == {"field": "starting_after"}


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/transcriptions", "ending_before=txn_x", "ending_before"),
        ("/v1/transcriptions", "Limit=1", "Limit"),
        ("/v1/transcriptions", "limit=1&state=failed", "state"),
        ("/v1/transcriptions/{id}", "fromat=srt", "fromat"),
    ],
)
def test_an_unknown_query_parameter_is_refused_not_ignored(client, new_org, path, query, field):
    """A misspelt filter answered as if absent would hand back a page the caller did not ask for."""
    _, headers = new_org("pro")
    txn_id = create(client, headers, upload_file(client, headers, JFK_MP3)).get_json()["id"]
    response = client.get(f"{path.format(id=txn_id)}?{query}", headers=headers)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]["fields"]


def test_delete_removes_everything_and_cancels_job(client, app, new_org, redis_conn, tmp_path, test_ns):
    org, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    txn_id = create(client, headers, upload_id).get_json()["id"]
    with app.app_context():
        row = Transcription.get(Transcription.public_id == txn_id)
        Segment.create(transcription=row, index=0, start=0, end=1, text="x")
        storage_key = Upload.get(Upload.public_id == upload_id).storage_key
    assert (tmp_path / "storage" / storage_key).exists()
    assert Job.exists(txn_id, connection=redis_conn)

    response = client.delete(f"/v1/transcriptions/{txn_id}", headers=headers)
    assert response.status_code == 204 and response.data == b""
    assert client.get(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 404
    assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 404
    assert not (tmp_path / "storage" / storage_key).exists()
    assert not Job.exists(txn_id, connection=redis_conn)
    assert Queue(org_queue(f"transcriptions-{test_ns}", org.public_id), connection=redis_conn).job_ids == []
    with app.app_context():
        assert Segment.select().count() == 0
        assert Upload.select().where(Upload.public_id == upload_id).count() == 0


def test_idempotency_key(client, new_org, redis_conn, test_ns):
    org, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    keyed = {**headers, "Idempotency-Key": "abc-123"}
    first = create(client, keyed, upload_id, language="en")
    second = create(client, keyed, upload_id, language="en")
    assert first.status_code == second.status_code == 202
    assert json.loads(first.data) == json.loads(second.data)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert Queue(org_queue(f"transcriptions-{test_ns}", org.public_id), connection=redis_conn).count == 1
    different = create(client, keyed, upload_id, language="de")
    assert different.status_code == 409 and different.get_json()["error"]["code"] == "CONFLICT"
    assert different.get_json()["error"]["details"] == {"header": "Idempotency-Key", "reason": "key_reused"}
    # another key, or another organization with the same key, is a new request
    assert (
        create(client, {**headers, "Idempotency-Key": "other"}, upload_id).get_json()["id"]
        != json.loads(first.data)["id"]
    )
    ttl = max(redis_conn.ttl(key) for key in redis_conn.scan_iter(match=f"{test_ns}:idempotency:*"))
    assert 23 * 3600 < ttl <= 24 * 3600


def test_private_webhook_urls_refused(client, new_org):
    _, headers = new_org("enterprise", custom_rate_limit=1000)
    upload_id = upload_file(client, headers, JFK_MP3)
    for url in (
        "http://localhost:8080/hook",
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://169.254.169.254/",
        "https://metadata.internal/",
    ):
        response = create(client, headers, upload_id, webhook_url=url)
        assert response.status_code == 422, url
        assert response.get_json()["error"]["details"] == {"field": "webhook_url"}
    assert create(client, headers, upload_id, webhook_url="https://hooks.example.com/x").status_code == 202


def test_private_webhook_allowed_when_configured(make_app):
    from api.services.orgs import create_org

    app = make_app(webhook_allow_private=True)
    with app.app_context():
        _, _, raw = create_org("dev", "dev@example.com", "pro")
    client, headers = app.test_client(), {"Authorization": f"Bearer {raw}"}
    upload_id = upload_file(client, headers, JFK_MP3)
    assert create(client, headers, upload_id, webhook_url="http://127.0.0.1:9000/hook").status_code == 202
