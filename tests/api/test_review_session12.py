"""Review of session 12's changes (helper-62): faults found in the upload delete and the transcription
delete, each forced at the interleaving that went wrong (as tests/api/test_api_races does)."""

from __future__ import annotations

import threading

from rq.job import Job

import api.queue as queue_module
import api.services.uploads as uploads_service
from api.models import Upload, UploadStatus
from tests.api.helpers import JFK_MP3, upload_file
from tests.api.test_api_s3 import (  # noqa: F401  (fixtures)
    JFK_FLAC,
    _complete,
    _org,
    _presign,
    _put,
    bucket,
    s3_app,
    s3_endpoint,
)


def test_an_s3_upload_deleted_while_it_is_being_completed_stays_deleted(s3_app, bucket, monkeypatch):  # noqa: F811
    """S3 holds no write lock (its `exclusive` holds nothing), so a DELETE runs during complete's checks:
    the upload was canceled and its object removed, then complete wrote `completed` over the canceled
    row and answered 200 for an upload whose audio was gone (a transcription of it then failed
    UPLOAD_MISSING in the worker)."""
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    body = _presign(client, headers, "talk.flac", len(data))
    _put(body, data)
    real_verify = uploads_service.verify_media
    deleted: list = []

    def deleted_during_the_probe(path, max_seconds):
        if not deleted:  # another request (another API process) deletes it meanwhile
            worker = threading.Thread(
                target=lambda: deleted.append(
                    s3_app.test_client().delete(f"/v1/uploads/{body['id']}", headers=headers)
                )
            )
            worker.start()
            worker.join(30)
        return real_verify(path, max_seconds)

    monkeypatch.setattr(uploads_service, "verify_media", deleted_during_the_probe)
    completed = _complete(client, headers, body["id"])
    assert deleted and deleted[0].status_code == 204, deleted and deleted[0].get_data(as_text=True)
    assert completed.status_code == 404, completed.get_data(as_text=True)
    assert completed.get_json()["error"]["code"] == "NOT_FOUND"
    with s3_app.app_context():
        assert Upload.get(Upload.public_id == body["id"]).status == UploadStatus.CANCELED
    assert bucket.keys() == []  # the object went with the delete, and complete left it gone
    create = client.post("/v1/transcriptions", json={"upload_id": body["id"]}, headers=headers)
    assert create.status_code == 404, create.get_data(as_text=True)


def test_a_delete_whose_job_the_recovery_sweep_removes_meanwhile_answers_204(app, new_org, monkeypatch):
    """The rows go first now: a worker's recovery sweep may delete the job of the transcription just
    deleted (jobs.recovery._forget_deleted) between the API's fetch of the job and its status read,
    which raised InvalidJobOperation: a 500 for a delete already committed."""
    _, headers = new_org("pro")
    client = app.test_client()
    upload_id = upload_file(client, headers, JFK_MP3)
    created = client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)
    assert created.status_code == 202, created.get_data(as_text=True)
    transcription_id = created.get_json()["id"]
    real_fetch = Job.fetch

    def fetched_then_swept(job_id, *args, **kwargs):
        job = real_fetch(job_id, *args, **kwargs)
        job.delete()  # what the sweep does to the failed job of a deleted transcription
        return job

    monkeypatch.setattr(queue_module.Job, "fetch", fetched_then_swept)
    deleted = client.delete(f"/v1/transcriptions/{transcription_id}", headers=headers)
    assert deleted.status_code == 204, deleted.get_data(as_text=True)
    again = client.get(f"/v1/transcriptions/{transcription_id}", headers=headers)
    assert again.status_code == 404
