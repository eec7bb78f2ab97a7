"""Presigned upload flow against local storage: real PUTs of real audio, every refusal path."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from pathlib import Path

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from api.models import Upload, UploadStatus, utcnow
from tests.api.helpers import JFK_MP3, local_path, upload_file


def presign(client, headers, filename="talk.mp3", size=1000, content_type="audio/mpeg"):
    return client.post(
        "/v1/uploads/presigned",
        json={"filename": filename, "content_type": content_type, "size": size},
        headers=headers,
    )


def test_presigned_put_complete_real_mp3(client, new_org, app, tmp_path):
    _, headers = new_org("pro")
    data = JFK_MP3.read_bytes()
    response = presign(client, headers, "../../etc/passwd jfk.mp3", len(data))
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"].startswith("upl_") and body["method"] == "PUT"
    assert body["expires_at"].endswith("Z")
    assert "/v1/uploads/" + body["id"] + "/content?signature=" in body["url"]

    put = client.put(local_path(body["url"]), data=data, headers=body["headers"])
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["status"] == UploadStatus.UPLOADED

    done = client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers)
    assert done.status_code == 200, done.get_json()
    upload = done.get_json()
    assert upload["status"] == "completed"
    assert 10.5 < upload["duration"] < 11.5
    assert upload["filename"] == "passwd jfk.mp3"  # display name only
    with app.app_context():
        row = Upload.get(Upload.public_id == body["id"])
        assert row.storage_key == f"uploads/{row.organization.public_id}/{row.public_id}"
    stored = tmp_path / "storage" / row.storage_key
    assert stored.read_bytes() == data
    # completing again is harmless
    again = client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers)
    assert again.status_code == 200


def test_unknown_format_names_allowed_ones(client, new_org):
    _, headers = new_org()
    response = presign(client, headers, "notes.txt")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["field"] == "filename"
    assert {"mp3", "wav", "mp4", "m4a", "flac", "ogg", "webm", "mov"} <= set(error["details"]["allowed"])


def test_invalid_body_field_by_field(client, new_org):
    _, headers = new_org()
    response = client.post("/v1/uploads/presigned", json={"filename": "a.mp3", "size": -1}, headers=headers)
    assert response.status_code == 422
    fields = response.get_json()["error"]["details"]["fields"]
    assert set(fields) == {"content_type", "size"}
    malformed = client.post(
        "/v1/uploads/presigned", data="{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code in {400, 422}
    assert malformed.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_declared_size_over_global_max(make_app, new_org):
    app = make_app(max_upload_bytes=1000)
    client = app.test_client()
    _, headers = _org(app, "pro")
    response = presign(client, headers, size=1001)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def _org(app, plan):
    from api.services.orgs import create_org

    with app.app_context():
        org, _, raw = create_org("x", f"{plan}-{time.time_ns()}@example.com", plan)
    return org, {"Authorization": f"Bearer {raw}"}


def test_tampered_and_expired_signatures_are_403(client, new_org, app):
    _, headers = new_org("pro")
    body = presign(client, headers, size=10).get_json()
    url = local_path(body["url"])
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    response = client.put(tampered, data=b"x" * 10)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    # a signature for another upload does not open this one
    other = presign(client, headers, size=10).get_json()
    swapped = local_path(body["url"]).split("?")[0] + "?" + local_path(other["url"]).split("?")[1]
    assert client.put(swapped, data=b"x" * 10).status_code == 403

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 2 * 3600

    secret = app.extensions["cliptext"].settings.secret_key
    expired_token = URLSafeTimedSerializer(secret, signer=PastSigner).dumps(
        {"u": body["id"]}, salt="upload-content-put"
    )
    response = client.put(f"/v1/uploads/{body['id']}/content?signature={expired_token}", data=b"x" * 10)
    assert response.status_code == 403
    assert "expired" in response.get_json()["error"]["message"]
    # and the genuine URL still works
    assert client.put(url, data=b"x" * 10).status_code == 200


def test_oversized_body_and_reuse(client, new_org, tmp_path):
    _, headers = new_org("pro")
    body = presign(client, headers, size=100).get_json()
    url = local_path(body["url"])
    too_big = client.put(url, data=b"x" * 101)
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # chunked (no Content-Length): cut off while streaming at the declared size, nothing left on disk
    streamed = client.put(
        url, input_stream=io.BytesIO(b"y" * 500), environ_overrides={"wsgi.input_terminated": True}
    )
    assert streamed.status_code == 413
    assert not any((tmp_path / "storage").rglob("upl_*"))
    ok = client.put(url, data=b"z" * 100)
    assert ok.status_code == 200
    reused = client.put(url, data=b"z" * 100)
    assert reused.status_code == 409
    assert reused.get_json()["error"]["code"] == "CONFLICT"


def test_complete_refusals(client, new_org):
    _, headers = new_org("pro")
    missing = presign(client, headers, size=100).get_json()
    response = client.post("/v1/uploads/complete", json={"upload_id": missing["id"]}, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "UPLOAD_MISSING"

    short = presign(client, headers, size=100).get_json()
    assert client.put(local_path(short["url"]), data=b"a" * 60).status_code == 200
    response = client.post("/v1/uploads/complete", json={"upload_id": short["id"]}, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "UPLOAD_SIZE_MISMATCH"
    assert response.get_json()["error"]["details"] == {"declared": 100, "received": 60}

    unknown = client.post("/v1/uploads/complete", json={"upload_id": "upl_nope"}, headers=headers)
    assert unknown.status_code == 404


def test_object_gone_between_size_and_probe_is_upload_missing(client, new_org, app, monkeypatch):
    """The object disappears after complete has sized it (an operator, a lifecycle rule): the answer is
    UPLOAD_MISSING, as for bytes that never came, not a misleading UNSUPPORTED_MEDIA."""
    _, headers = new_org("pro")
    audio = JFK_MP3.read_bytes()
    body = presign(client, headers, "jfk.mp3", len(audio)).get_json()
    assert client.put(local_path(body["url"]), data=audio).status_code == 200
    storage = app.extensions["cliptext"].storage
    sized = storage.size

    def size_then_gone(key: str) -> int | None:
        size = sized(key)
        storage.delete(key)
        return size

    monkeypatch.setattr(storage, "size", size_then_gone)
    response = client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "UPLOAD_MISSING"
    assert "start a new upload" in response.get_json()["error"]["message"]
    # its URL took its one PUT: it can never become usable, so it no longer holds a slot under the cap
    assert Upload.get_or_none(Upload.public_id == body["id"]) is None


def _png_bytes() -> bytes:
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        import struct

        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    import struct

    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_png_named_mp3_is_refused_at_complete(client, new_org):
    _, headers = new_org("pro")
    png = _png_bytes()
    body = presign(client, headers, "song.mp3", len(png)).get_json()
    assert client.put(local_path(body["url"]), data=png).status_code == 200
    response = client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA"


def test_concurrent_upload_cap_free_plan(client, new_org):
    _, headers = new_org("free")
    first = presign(client, headers, size=len(JFK_MP3.read_bytes()))
    assert first.status_code == 201
    second = presign(client, headers)
    assert second.status_code == 429
    error = second.get_json()["error"]
    assert error["code"] == "CONCURRENT_UPLOAD_LIMIT"
    assert error["details"]["limit"] == 1
    body = first.get_json()
    assert client.put(local_path(body["url"]), data=JFK_MP3.read_bytes()).status_code == 200
    assert (
        client.post("/v1/uploads/complete", json={"upload_id": body["id"]}, headers=headers).status_code
        == 200
    )
    assert presign(client, headers).status_code == 201  # the slot is free again


def test_concurrent_upload_cap_under_threads(make_app, app, new_org):
    """Twelve simultaneous presign calls through two app instances: exactly the Pro cap (5) succeed."""
    _, headers = new_org("pro")
    apps = [app, make_app()]
    barrier = threading.Barrier(12)
    codes: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        client = apps[i % 2].test_client()
        barrier.wait()
        status = presign(client, headers).status_code
        with lock:
            codes.append(status)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [201] * 5 + [429] * 7


def test_enterprise_custom_concurrency(client, new_org):
    _, headers = new_org("enterprise", custom_concurrent_uploads=2)
    assert [presign(client, headers).status_code for _ in range(3)] == [201, 201, 429]


def test_upload_helper_roundtrip(client, new_org):
    _, headers = new_org("pro")
    assert upload_file(client, headers, JFK_MP3).startswith("upl_")
    assert Path(JFK_MP3).exists()


def test_purge_expired_uploads(client, app, new_org, tmp_path):
    _, headers = new_org("pro")
    stale = presign(client, headers, size=3).get_json()
    assert client.put(local_path(stale["url"]), data=b"abc").status_code == 200
    fresh = presign(client, headers, size=3).get_json()
    with app.app_context():
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
            Upload.public_id == stale["id"]
        ).execute()
        key = Upload.get(Upload.public_id == stale["id"]).storage_key
    assert (tmp_path / "storage" / key).exists()
    result = app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 1" in result.output
    assert not (tmp_path / "storage" / key).exists()
    with app.app_context():
        assert [u.public_id for u in Upload.select()] == [fresh["id"]]
