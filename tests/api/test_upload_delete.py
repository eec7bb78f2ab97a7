"""DELETE /v1/uploads/{id}: an upload that will not be completed gives its concurrent-upload slot back at
once (an abandoned presign held the Free plan's only slot for an hour), and unused bytes can be removed
without waiting for the purge."""

from __future__ import annotations

import datetime as dt
import threading

from api.models import Upload, UploadStatus, utcnow
from api.state import state
from tests.api.helpers import JFK_MP3, local_path, presign, stored_files, upload_file


def _stored_key(app, upload_id: str) -> str:
    with app.app_context():
        return Upload.get(Upload.public_id == upload_id).storage_key


def test_deleting_an_abandoned_upload_frees_the_free_plans_slot_at_once(client, new_org):
    _, headers = new_org("free")  # 1 concurrent upload
    first = presign(client, headers, b"x" * 1000)
    refused = client.post(
        "/v1/uploads/presigned",
        json={"filename": "b.mp3", "content_type": "audio/mpeg", "size": 10},
        headers=headers,
    )
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "CONCURRENT_UPLOAD_LIMIT"

    deleted = client.delete(f"/v1/uploads/{first['id']}", headers=headers)
    assert deleted.status_code == 204, deleted.get_json()
    assert presign(client, headers, b"y" * 10)["id"].startswith("upl_")


def test_a_deleted_upload_answers_404_everywhere_its_url_included(client, app, new_org, tmp_path):
    _, headers = new_org("pro")
    data = JFK_MP3.read_bytes()
    body = presign(client, headers, data)
    assert client.put(local_path(body["url"]), data=data, headers=body["headers"]).status_code == 200
    key = _stored_key(app, body["id"])
    assert key in stored_files(tmp_path)

    assert client.delete(f"/v1/uploads/{body['id']}", headers=headers).status_code == 204
    assert key not in stored_files(tmp_path)  # the bytes at once, not at the purge
    again = client.put(local_path(body["url"]), data=data, headers=body["headers"])
    assert again.status_code == 404, again.get_json()  # the URL is still signed: it stores nothing
    assert key not in stored_files(tmp_path)
    complete = client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers)
    assert complete.status_code == 404 and complete.get_json()["error"]["code"] == "NOT_FOUND"
    create = client.post("/v1/transcriptions", json={"upload_id": body["id"]}, headers=headers)
    assert create.status_code == 404, create.get_json()
    twice = client.delete(f"/v1/uploads/{body['id']}", headers=headers)
    assert twice.status_code == 404 and twice.get_json()["error"]["code"] == "NOT_FOUND"


def test_a_completed_upload_no_transcription_uses_can_be_deleted(client, app, new_org, tmp_path):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    key = _stored_key(app, upload_id)
    assert client.delete(f"/v1/uploads/{upload_id}", headers=headers).status_code == 204
    assert key not in stored_files(tmp_path)
    with app.app_context():
        assert Upload.get(Upload.public_id == upload_id).status == UploadStatus.CANCELED


def test_an_upload_a_transcription_uses_is_not_deleted_under_it(client, app, new_org, tmp_path):
    _, headers = new_org("pro")
    upload_id = upload_file(client, headers, JFK_MP3)
    created = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)
    assert created.status_code == 202, created.get_json()
    refused = client.delete(f"/v1/uploads/{upload_id}", headers=headers)
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "CONFLICT" and error["details"]["transcription_id"] == created.get_json()["id"]
    assert _stored_key(app, upload_id) in stored_files(tmp_path)


def test_another_organizations_upload_is_not_found_and_stays(client, app, new_org, tmp_path):
    _, owner = new_org("pro")
    _, stranger = new_org("pro")
    upload_id = upload_file(client, owner, JFK_MP3)
    refused = client.delete(f"/v1/uploads/{upload_id}", headers=stranger)
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "NOT_FOUND"
    assert _stored_key(app, upload_id) in stored_files(tmp_path)
    assert client.delete("/v1/uploads/upl_nothing", headers=owner).status_code == 404


def test_a_delete_while_the_bytes_are_being_received_waits_its_turn(client, app, new_org, tmp_path):
    """Under the upload's write lock, held here as a PUT in progress holds it: the bytes being written
    would have been stored after the delete, under a canceled upload."""
    _, headers = new_org("pro")
    body = presign(client, headers, b"x" * 1000)
    key = _stored_key(app, body["id"])
    with app.app_context():
        storage = state().storage
    holding, release = threading.Event(), threading.Event()

    def put_in_progress() -> None:
        with storage.exclusive(key):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=put_in_progress)
    thread.start()
    try:
        assert holding.wait(10)
        busy = client.delete(f"/v1/uploads/{body['id']}", headers=headers)
        assert busy.status_code == 409 and busy.headers.get("Retry-After"), busy.get_json()
    finally:
        release.set()
        thread.join(10)
    assert client.delete(f"/v1/uploads/{body['id']}", headers=headers).status_code == 204


def test_the_purge_removes_a_deleted_upload_and_what_a_late_put_stored_once_its_url_expired(
    client, app, new_org, tmp_path
):
    """An S3 URL cannot be revoked: a PUT after the delete stores bytes no row names but this one."""
    _, headers = new_org("pro")
    body = presign(client, headers, b"abc")
    assert client.delete(f"/v1/uploads/{body['id']}", headers=headers).status_code == 204
    key = _stored_key(app, body["id"])
    late = tmp_path / "storage" / key
    late.parent.mkdir(parents=True, exist_ok=True)
    late.write_bytes(b"abc")  # what S3 keeps of a PUT to the presigned URL after the delete
    with app.app_context():
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
            Upload.public_id == body["id"]
        ).execute()
    result = app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 1" in result.output, result.output
    assert not late.exists()
    with app.app_context():
        assert not Upload.select().where(Upload.public_id == body["id"]).exists()
