"""Deleting a transcription takes its stored Idempotency-Key answer with it.

The 202 a keyed create answered was kept in Redis for 24 h to be replayed: after a DELETE it still held
the transcription's options (its prompt, customer text, and its webhook URL), and a reuse of the key
replayed a 202 naming an id that answers 404. Now the delete leaves a tombstone under the key: no body,
and the key answers 409 with details.reason "deleted" (no Retry-After: the SDK does not retry it), so the
request is not run again either (a second charge, the erased audio stored again).
"""

from __future__ import annotations

import io
import secrets
from datetime import timedelta

import redis
from flask import jsonify

from api.auth import current_principal
from api.models import Transcription, Upload, utcnow
from api.services import transcriptions as service
from api.services.idempotency import idempotent
from api.services.uploads import purge_expired
from api.state import state
from tests.api.helpers import JFK_MP3, local_path, upload_file

KEY = "create-once"


def redis_text(redis_conn: redis.Redis, test_ns: str) -> str:
    """Everything stored under this test's Redis keys (strings, hashes, lists, sets, sorted sets)."""
    parts: list[bytes] = []
    for key in redis_conn.scan_iter(match=f"{test_ns}:*"):
        kind = redis_conn.type(key)
        if kind == b"string":
            parts.append(redis_conn.get(key) or b"")
        elif kind == b"hash":
            for field, value in redis_conn.hgetall(key).items():
                parts += [field, value]
        elif kind == b"list":
            parts += redis_conn.lrange(key, 0, -1)
        elif kind == b"set":
            parts += redis_conn.smembers(key)
        elif kind == b"zset":
            parts += redis_conn.zrange(key, 0, -1)
    return b"\n".join(parts).decode(errors="replace")


def options() -> dict[str, str]:
    """A prompt and webhook URL found nowhere else."""
    tag = secrets.token_hex(6)
    return {"prompt": f"customer words {tag}", "webhook_url": f"https://example.com/hook-{tag}"}


def count(app, model) -> int:
    with app.app_context():
        return model.select().count()


def assert_deleted_answer(answer, txn_id: str) -> None:
    """409 "deleted" in the error envelope, final (no Retry-After), naming the deleted transcription."""
    assert answer.status_code == 409, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "CONFLICT"
    assert error["details"]["reason"] == "deleted"
    assert error["details"]["transcription_id"] == txn_id
    assert txn_id in error["message"] and "deleted" in error["message"]
    assert "Retry-After" not in answer.headers and "Idempotent-Replayed" not in answer.headers


def test_delete_removes_the_stored_answer_and_a_retry_is_refused(make_app, new_org, redis_conn, test_ns):
    app, other_process = make_app(), make_app()
    _, headers = new_org("pro")
    client, keyed = app.test_client(), {**headers, "Idempotency-Key": KEY}
    upload_id = upload_file(client, headers, JFK_MP3)
    extra = options()
    body = {"upload_id": upload_id, **extra}
    created = client.post("/v1/transcriptions", json=body, headers=keyed)
    assert created.status_code == 202, created.get_json()
    txn_id = created.get_json()["id"]
    assert extra["prompt"] in redis_text(redis_conn, test_ns)  # what the delete must take away

    # deleted through another API process: the rule lives in Redis, not in the process that recorded it
    gone = other_process.test_client().delete(f"/v1/transcriptions/{txn_id}", headers=headers)
    assert gone.status_code == 204
    stored = redis_text(redis_conn, test_ns)
    assert extra["prompt"] not in stored and extra["webhook_url"] not in stored

    retry = client.post("/v1/transcriptions", json=body, headers=keyed)
    assert_deleted_answer(retry, txn_id)
    assert count(app, Transcription) == 0  # not run again
    # another request under the key is still told the key was used for something else
    other = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=keyed)
    assert other.status_code == 409 and other.get_json()["error"]["details"]["reason"] == "key_reused"


def test_multipart_create_deleted_then_retried(make_app, new_org, redis_conn, test_ns):
    app = make_app()
    _, headers = new_org("pro")
    client, keyed = app.test_client(), {**headers, "Idempotency-Key": KEY}
    extra = options()

    def post():
        with JFK_MP3.open("rb") as handle:
            form = {"file": (io.BytesIO(handle.read()), "jfk.mp3", "audio/mpeg"), **extra}
        return client.post("/v1/transcriptions", data=form, headers=keyed, content_type="multipart/form-data")

    created = post()
    assert created.status_code == 202, created.get_json()
    txn_id = created.get_json()["id"]
    assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204
    stored = redis_text(redis_conn, test_ns)
    assert extra["prompt"] not in stored and extra["webhook_url"] not in stored

    assert_deleted_answer(post(), txn_id)
    assert count(app, Transcription) == 0 and count(app, Upload) == 0  # the erased audio not stored again


def test_an_answer_stored_after_its_transcription_was_deleted_is_a_tombstone(
    make_app, new_org, redis_conn, test_ns
):
    """The delete can land between a create's commit and the storing of its answer (the client found the
    id in the list; another process deleted it): the answer stored then must not bring the options back.

    The view below runs the real create and then the real delete before handing back its 202, which is
    that order made certain."""
    app = make_app()
    extra = options()

    @idempotent
    def create_then_deleted_elsewhere():
        org = current_principal().org
        upload = service.upload_for(org, upload_id)
        row = service.create(state(), org, upload, {"upload_id": upload.public_id, **extra})
        service.delete(state(), row)
        return jsonify({"id": row.public_id, "options": extra}), 202

    app.add_url_rule(
        "/v1/test-create-then-deleted", view_func=create_then_deleted_elsewhere, methods=["POST"]
    )
    _, headers = new_org("pro")
    client, keyed = app.test_client(), {**headers, "Idempotency-Key": KEY}
    upload_id = upload_file(client, headers, JFK_MP3)

    first = client.post("/v1/test-create-then-deleted", json={}, headers=keyed)
    assert first.status_code == 202, first.get_json()
    txn_id = first.get_json()["id"]
    stored = redis_text(redis_conn, test_ns)
    assert extra["prompt"] not in stored and extra["webhook_url"] not in stored
    assert_deleted_answer(client.post("/v1/test-create-then-deleted", json={}, headers=keyed), txn_id)


def test_a_transcription_made_without_a_key_deletes_as_before(app, client, new_org):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    txn_id = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers).get_json()[
        "id"
    ]
    assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204
    assert client.get(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 404


PRESIGN = {"filename": "board-meeting.mp3", "content_type": "audio/mpeg", "size": JFK_MP3.stat().st_size}


def assert_upload_deleted_answer(answer, upload_id: str) -> None:
    assert answer.status_code == 409, answer.get_json()
    error = answer.get_json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("CONFLICT", "deleted")
    assert error["details"]["upload_id"] == upload_id and upload_id in error["message"]
    assert "Retry-After" not in answer.headers


def test_a_deleted_uploads_keyed_presign_is_not_replayed(client, new_org, redis_conn, test_ns):
    """A keyed presign replayed, after DELETE /v1/uploads/{id}, a 201 naming the deleted upload, and its
    signed URL stayed in Redis for 24 h."""
    _, owner = new_org("pro")
    keyed = {**owner, "Idempotency-Key": "presign-once"}
    first = client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed)
    assert first.status_code == 201, first.get_json()
    upload_id, url = first.get_json()["id"], first.get_json()["url"]
    signature = url.split("?", 1)[1]
    assert signature in redis_text(redis_conn, test_ns)  # the check can see it

    assert client.delete(f"/v1/uploads/{upload_id}", headers=owner).status_code == 204

    assert signature not in redis_text(redis_conn, test_ns)
    assert_upload_deleted_answer(client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed), upload_id)


def test_an_upload_deleted_with_its_transcription_is_not_replayed(client, new_org):
    _, owner = new_org("pro")
    keyed = {**owner, "Idempotency-Key": "presign-then-create"}
    presigned = client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed).get_json()
    put = client.put(local_path(presigned["url"]), data=JFK_MP3.read_bytes(), headers=presigned["headers"])
    assert put.status_code == 200, put.get_json()
    done = client.post("/v1/uploads/complete", json={"upload_id": presigned["id"]}, headers=owner)
    assert done.status_code == 200, done.get_json()
    created = client.post("/v1/transcriptions", json={"upload_id": presigned["id"]}, headers=owner)
    assert created.status_code == 202, created.get_json()

    gone = client.delete(f"/v1/transcriptions/{created.get_json()['id']}", headers=owner)
    assert gone.status_code == 204

    replay = client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed)
    assert_upload_deleted_answer(replay, presigned["id"])


def test_an_upload_the_purge_removed_is_not_replayed(app, client, new_org):
    """Its URL expired unused: the purge removes the row, and the key stops replaying a dead URL."""
    _, owner = new_org("pro")
    keyed = {**owner, "Idempotency-Key": "presign-never-put"}
    upload_id = client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed).get_json()["id"]
    with app.app_context():
        Upload.update(expires_at=utcnow() - timedelta(minutes=1)).where(
            Upload.public_id == upload_id
        ).execute()
        assert purge_expired(app.extensions["cliptext"]) == 1

    assert_upload_deleted_answer(client.post("/v1/uploads/presigned", json=PRESIGN, headers=keyed), upload_id)
