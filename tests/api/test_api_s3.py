"""S3 storage end to end: the app's boto3 talks real HTTP to an S3-compatible server (moto's, run as a
subprocess on a free port), and the test's own HTTP client PUTs real audio to the presigned URLs.

Every outcome is read back from the bucket with a separate boto3 client: the object's key and bytes after
presign → PUT → complete and after a multipart create, its removal when an upload is refused, deleted or
expired, and the worker's `local_copy` of it. moto does not verify SigV4 signatures, so the signed
Content-Type and Content-Length and the URL's expiry are not enforced here (test_api_storage checks what
the URL signs).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions
import numpy as np
import pytest
import requests
from botocore.config import Config
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from api.models import Transcription, Upload, utcnow
from api.services.orgs import create_org
from api.storage import S3Storage, TooLarge, open_storage
from tests.media import clip_path, png_bytes, random_bytes, write_wav

REGION = "us-east-1"
ACCESS_KEY = "cliptext-test"
SECRET_KEY = "cliptext-test-secret"
PREFIX = "audio/in"
JFK_FLAC = clip_path("jfk.flac")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}, connect_timeout=2),
    )


def _start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free port, once it answers ListBuckets (a few tries if the port was taken)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for _ in range(3):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                _client(endpoint).list_buckets()
                return process, endpoint
            except Exception:
                time.sleep(0.1)
        _stop(process)
    raise RuntimeError(f"moto server did not start; its log:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, endpoint = _start_moto(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield endpoint
    finally:
        _stop(process)


@dataclass
class Bucket:
    name: str
    endpoint: str
    client: object

    @property
    def storage_url(self) -> str:
        return f"s3://{self.name}/{PREFIX}"

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket; the app's boto3 finds the server through the usual AWS_* variables only."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    name = f"cliptext-{secrets.token_hex(6)}"
    client = _client(s3_endpoint)
    client.create_bucket(Bucket=name)
    return Bucket(name, s3_endpoint, client)


@pytest.fixture
def s3_app(make_app, bucket: Bucket):
    app = make_app(storage_url=bucket.storage_url)
    assert isinstance(app.extensions["cliptext"].storage, S3Storage)
    return app


def _org(app, plan: str = "pro"):
    with app.app_context():
        org, _, raw = create_org("s3", f"s3-{secrets.token_hex(4)}@example.com", plan)
    return org, {"Authorization": f"Bearer {raw}"}


def _presign(client, headers, filename: str, size: int, content_type: str = "audio/flac") -> dict:
    response = client.post(
        "/v1/uploads/presigned",
        json={"filename": filename, "content_type": content_type, "size": size},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _put(body: dict, data: bytes) -> None:
    """The client's PUT: real HTTP to the presigned URL with the returned headers, as a browser would."""
    assert body["method"] == "PUT"
    response = requests.put(body["url"], data=data, headers=body["headers"], timeout=60)
    assert response.status_code == 200, response.text


def _complete(client, headers, upload_id: str):
    return client.post("/v1/uploads/complete", json={"upload_id": upload_id}, headers=headers)


def _uploaded(client, headers, filename: str, data: bytes) -> dict:
    """presign -> PUT -> complete (200): the presign answer of an upload ready to transcribe."""
    body = _presign(client, headers, filename, len(data))
    _put(body, data)
    assert _complete(client, headers, body["id"]).status_code == 200
    return body


def _multipart_create(client, headers, data: bytes, filename: str, content_type: str, **fields: str):
    """POST /v1/transcriptions as multipart/form-data. The body is encoded here in memory: the test
    client's own encoder spools bodies over 500 kB to a temporary file that it never closes."""
    file = FileStorage(io.BytesIO(data), filename=filename, content_type=content_type)
    boundary, body = encode_multipart({"file": file, **fields})
    return client.post(
        "/v1/transcriptions",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=headers,
    )


def _object_key(app, upload_id: str) -> str:
    with app.app_context():
        row = Upload.get(Upload.public_id == upload_id)
        assert row.storage_key == f"uploads/{row.organization.public_id}/{row.public_id}"
        return f"{PREFIX}/{row.storage_key}"


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    return body["error"]


def test_presign_put_complete_real_flac(s3_app, bucket):
    client = s3_app.test_client()
    org, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    body = _presign(client, headers, "../../Board secrets jfk.flac", len(data))
    assert body["id"].startswith("upl_")
    assert body["url"].startswith(f"{bucket.endpoint}/{bucket.name}/{PREFIX}/uploads/{org.public_id}/")
    assert body["headers"] == {"Content-Type": "audio/flac"}
    assert bucket.keys() == []  # nothing before the PUT

    _put(body, data)
    done = _complete(client, headers, body["id"])
    assert done.status_code == 200, done.get_json()
    upload = done.get_json()
    assert upload["id"] == body["id"] and upload["status"] == "completed"
    assert upload["size"] == len(data) and upload["completed_at"]
    assert 10.5 < upload["duration"] < 11.5
    assert upload["filename"] == "Board secrets jfk.flac"  # display name only

    key = _object_key(s3_app, body["id"])
    assert bucket.keys() == [key]
    assert "secret" not in key.lower() and "jfk" not in key and "flac" not in key
    assert bucket.read(key) == data
    head = bucket.client.head_object(Bucket=bucket.name, Key=key)
    assert head["ContentLength"] == len(data) and head["ContentType"] == "audio/flac"
    # completing again is harmless and leaves the object alone
    again = _complete(client, headers, body["id"])
    assert again.status_code == 200 and again.get_json()["status"] == "completed"
    assert bucket.keys() == [key]


def test_complete_before_put_is_upload_missing(s3_app, bucket):
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    body = _presign(client, headers, "early.flac", len(data))
    error = _error(_complete(client, headers, body["id"]), 422, "UPLOAD_MISSING")
    assert error["details"] == {"upload_id": body["id"]}
    # the upload stays usable: the PUT can still come, then complete succeeds
    _put(body, data)
    done = _complete(client, headers, body["id"])
    assert done.status_code == 200 and done.get_json()["status"] == "completed", done.get_json()
    assert bucket.keys() == [_object_key(s3_app, body["id"])]


@pytest.mark.parametrize("delta", [1, -1])
def test_size_other_than_declared_is_refused_and_removed(s3_app, bucket, delta):
    """The URL signs the length, so S3 itself refuses such a PUT; moto does not check signatures, which
    lets this test reach the second line: complete checks the size, and drops what it refuses."""
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    declared = len(data) - delta
    body = _presign(client, headers, "talk.flac", declared)
    _put(body, data)
    assert bucket.keys() == [_object_key(s3_app, body["id"])]
    error = _error(_complete(client, headers, body["id"]), 422, "UPLOAD_SIZE_MISMATCH")
    assert error["details"] == {"declared": declared, "received": len(data)}
    assert bucket.keys() == []
    _error(_complete(client, headers, body["id"]), 404, "NOT_FOUND")


@pytest.mark.parametrize("kind", ["png", "random"])
def test_non_audio_body_is_refused_and_removed(s3_app, bucket, kind):
    client = s3_app.test_client()
    _, headers = _org(s3_app, "free")
    data = png_bytes() if kind == "png" else random_bytes(50_000, seed=3)
    body = _presign(client, headers, "song.mp3", len(data), content_type="audio/mpeg")
    _put(body, data)
    assert len(bucket.keys()) == 1
    _error(_complete(client, headers, body["id"]), 422, "UNSUPPORTED_MEDIA")
    assert bucket.keys() == []
    # the refused upload no longer holds the Free plan's one concurrent-upload slot
    _presign(client, headers, "next.mp3", 3, content_type="audio/mpeg")
    # its URL is still valid: what a PUT stores there now is removed once it has expired (the row was
    # deleted at once, and such an object kept for ever)
    _put(body, data)
    with s3_app.app_context():
        Upload.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
            Upload.public_id == body["id"]
        ).execute()
    result = s3_app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert bucket.keys() == []  # the next upload has no bytes yet
    with s3_app.app_context():
        assert not Upload.select().where(Upload.public_id == body["id"]).exists()


def test_multipart_create_stores_in_bucket_and_delete_removes_it(s3_app, bucket):
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    response = _multipart_create(client, headers, data, "Board secrets.flac", "audio/flac", language="en")
    assert response.status_code == 202, response.get_json()
    txn = response.get_json()
    assert txn["status"] == "queued" and 10.5 < txn["duration"] < 11.5
    key = _object_key(s3_app, txn["upload_id"])
    assert bucket.keys() == [key] and "secret" not in key.lower()
    assert bucket.read(key) == data

    deleted = client.delete(f"/v1/transcriptions/{txn['id']}", headers=headers)
    assert deleted.status_code == 204
    assert bucket.keys() == []
    with s3_app.app_context():
        assert Upload.select().where(Upload.public_id == txn["upload_id"]).count() == 0
        assert Transcription.select().where(Transcription.public_id == txn["id"]).count() == 0


def test_presigned_upload_transcription_delete_removes_object_and_a_late_put(s3_app, bucket):
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    body = _uploaded(client, headers, "call.flac", data)
    created = client.post("/v1/transcriptions", json={"upload_id": body["id"]}, headers=headers)
    assert created.status_code == 202, created.get_json()
    assert bucket.keys() == [_object_key(s3_app, body["id"])]
    assert client.delete(f"/v1/transcriptions/{created.get_json()['id']}", headers=headers).status_code == 204
    assert bucket.keys() == []
    # S3 takes a PUT to a signed URL that is still valid without asking us: once the transcription and
    # its upload were deleted, such a PUT left an object no row pointed at, kept for ever
    _error(_complete(client, headers, body["id"]), 404, "NOT_FOUND")  # nothing shows it again
    _put(body, data)  # the client's retry of its PUT, or anyone holding the URL
    assert len(bucket.keys()) == 1
    with s3_app.app_context():
        row = Upload.get(Upload.public_id == body["id"])
        assert row.filename == "deleted"  # the customer's name goes with the transcription
        row.expires_at = utcnow() - dt.timedelta(seconds=1)  # an hour later
        row.save()
    result = s3_app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 1" in result.output, result.output
    assert bucket.keys() == []
    with s3_app.app_context():
        assert not Upload.select().where(Upload.public_id == body["id"]).exists()


def test_multipart_refusals_leave_nothing_in_bucket(make_app, bucket):
    app = make_app(storage_url=bucket.storage_url, max_upload_bytes=100_000)
    client = app.test_client()
    _, headers = _org(app)
    fake = _multipart_create(client, headers, png_bytes(), "fake.mp3", "audio/mpeg")
    _error(fake, 422, "UNSUPPORTED_MEDIA")
    assert bucket.keys() == []
    # over the maximum upload size (jfk.flac is ~ 350 kB): cut off while spooling, never sent to S3
    assert JFK_FLAC.stat().st_size > 100_000
    big = _multipart_create(client, headers, JFK_FLAC.read_bytes(), "big.flac", "audio/flac")
    assert big.status_code == 413, big.get_json()
    assert big.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert bucket.keys() == []


def test_purge_expired_removes_objects(s3_app, bucket):
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    stale = _presign(client, headers, "stale.flac", 3)
    _put(stale, b"abc")
    fresh = _presign(client, headers, "fresh.flac", 3)
    _put(fresh, b"def")
    with s3_app.app_context():
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
            Upload.public_id == stale["id"]
        ).execute()
    stale_key, fresh_key = _object_key(s3_app, stale["id"]), _object_key(s3_app, fresh["id"])
    assert bucket.keys() == sorted([stale_key, fresh_key])
    result = s3_app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 1" in result.output, result.output
    assert bucket.keys() == [fresh_key]


def test_worker_local_copy_and_size(s3_app, bucket):
    """What the worker does: open_storage(STORAGE_URL) from the environment, then local_copy the object."""
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    data = JFK_FLAC.read_bytes()
    body = _uploaded(client, headers, "job.flac", data)
    with s3_app.app_context():
        storage_key = Upload.get(Upload.public_id == body["id"]).storage_key

    storage = open_storage(bucket.storage_url)
    assert isinstance(storage, S3Storage)
    assert storage.size(storage_key) == len(data)
    assert storage.size(storage_key + "_missing") is None
    with storage.local_copy(storage_key) as path:
        assert path.read_bytes() == data
        folder = path.parent
    assert not folder.exists()  # the temporary copy goes away with the context


def test_s3storage_write_stream_limit_and_delete(bucket):
    """The storage calls on their own: the size limit while spooling, deletes, key checks before any call."""
    storage = open_storage(bucket.storage_url)
    assert storage.write_stream("uploads/org_a/upl_b", io.BytesIO(b"x" * 100), limit=100) == 100
    assert bucket.keys() == [f"{PREFIX}/uploads/org_a/upl_b"]
    with pytest.raises(TooLarge):
        storage.write_stream("uploads/org_a/upl_c", io.BytesIO(b"y" * 101), limit=100)
    assert bucket.keys() == [f"{PREFIX}/uploads/org_a/upl_b"]  # nothing sent past the limit
    storage.delete("uploads/org_a/upl_b")
    storage.delete("uploads/org_a/upl_b")  # a second delete (or of a missing key) is harmless
    assert bucket.keys() == []
    for bad in ("../outside", "uploads/../x", "/abs", "a b"):
        with pytest.raises(ValueError):
            storage.write_stream(bad, io.BytesIO(b"z"), limit=10)
    assert bucket.keys() == []


def test_large_file_multipart_transfer_roundtrip(s3_app, bucket, tmp_path):
    """Past boto3's 8 MiB threshold: S3 multipart upload on the way in, ranged GETs on the way out."""
    client = s3_app.test_client()
    _, headers = _org(s3_app)
    seconds = 300.0  # 16 kHz 16-bit mono: 9.6 MB
    samples = 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(16000 * seconds)) / 16000).astype(np.float32)
    wav = write_wav(tmp_path / "long.wav", samples, 16000)
    data = wav.read_bytes()
    assert len(data) > 9 * 1024 * 1024
    response = _multipart_create(client, headers, data, "long.wav", "audio/wav")
    assert response.status_code == 202, response.get_json()
    txn = response.get_json()
    assert abs(txn["duration"] - seconds) < 0.1
    key = _object_key(s3_app, txn["upload_id"])
    assert bucket.keys() == [key]
    assert bucket.client.head_object(Bucket=bucket.name, Key=key)["ContentLength"] == len(data)
    with open_storage(bucket.storage_url).local_copy(key.removeprefix(PREFIX + "/")) as path:
        assert path.read_bytes() == data


def test_a_missing_bucket_is_503_not_a_client_error(make_app, bucket):
    """The operator's misconfiguration: never a 500, and never blamed on the client (UPLOAD_MISSING)."""
    app = make_app(storage_url=f"s3://{bucket.name}-gone/{PREFIX}")
    client = app.test_client()
    _, headers = _org(app)
    data = JFK_FLAC.read_bytes()
    created = _multipart_create(client, headers, data, "talk.flac", "audio/flac")
    error = _error(created, 503, "SERVICE_UNAVAILABLE")
    assert created.headers["Retry-After"] and "Traceback" not in created.get_data(as_text=True)
    assert set(error["details"]) == {"request_id"}
    body = _presign(client, headers, "talk.flac", len(data))  # signing needs no bucket
    _error(_complete(client, headers, body["id"]), 503, "SERVICE_UNAVAILABLE")
    assert bucket.keys() == []  # nothing went astray into the configured bucket's neighbour


def test_presigned_urls_go_to_the_public_endpoint_when_set(make_app, bucket, monkeypatch):
    """Containers reach S3 at AWS_ENDPOINT_URL, clients at S3_PUBLIC_ENDPOINT_URL: URLs are for the latter."""
    public = bucket.endpoint.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("S3_PUBLIC_ENDPOINT_URL", public)
    app = make_app(storage_url=bucket.storage_url)  # the setting read from the environment
    default = make_app(storage_url=bucket.storage_url, storage_public_endpoint="")
    client = app.test_client()
    _, headers = _org(app)
    data = JFK_FLAC.read_bytes()
    body = _uploaded(client, headers, "talk.flac", data)
    assert body["url"].startswith(public + "/")
    assert bucket.read(_object_key(app, body["id"])) == data
    _, default_headers = _org(default)
    assert _presign(default.test_client(), default_headers, "b.flac", 4)["url"].startswith(
        bucket.endpoint + "/"
    )


def test_worker_local_copy_of_a_gone_object_or_bucket(bucket):
    """A deleted object gives a path that does not exist (the worker fails it as UPLOAD_MISSING, as with
    local storage); a missing bucket raises, which the worker retries as SERVICE_UNAVAILABLE."""
    storage = open_storage(bucket.storage_url)
    with storage.local_copy("uploads/org_x/upl_gone") as path:
        assert not path.exists()
    gone = open_storage(f"s3://{bucket.name}-gone/{PREFIX}")
    with pytest.raises(botocore.exceptions.ClientError), gone.local_copy("uploads/org_x/upl_gone"):
        pass


def test_a_presign_that_cannot_be_signed_keeps_no_upload_slot(make_app, bucket, monkeypatch):
    """No credentials: 503, and the free plan's one concurrent upload is still free for the next try."""
    with monkeypatch.context() as no_credentials:  # boto3 looks for credentials when it first signs
        no_credentials.setattr(boto3, "DEFAULT_SESSION", None)  # and keeps them in its default session
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            no_credentials.delenv(name)
        no_credentials.setenv("AWS_EC2_METADATA_DISABLED", "true")
        unsigned = make_app(storage_url=bucket.storage_url)
        _, headers = _org(unsigned, plan="free")
        for _ in range(3):
            response = unsigned.test_client().post(
                "/v1/uploads/presigned",
                json={"filename": "a.flac", "content_type": "audio/flac", "size": 4},
                headers=headers,
            )
            _error(response, 503, "SERVICE_UNAVAILABLE")
    signed = make_app(storage_url=bucket.storage_url)
    assert _presign(signed.test_client(), headers, "a.flac", 4)["url"].startswith(bucket.endpoint)
