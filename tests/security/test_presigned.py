"""Presigned (local) upload URLs: tampered, forged, expired, reused or oversized PUTs are refused and leave
nothing behind; the genuine URL works exactly once, even when raced."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from api.models import Upload

SALT = "upload-content-put"


def presign(client, raw: str, size: int) -> dict:
    response = client.post(
        "/v1/uploads/presigned",
        json={"filename": "a.mp3", "content_type": "audio/mpeg", "size": size},
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    parts = urlsplit(body["url"])
    body["path"], body["token"] = parts.path, parts.query.removeprefix("signature=")
    return body


def refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and set(error) == {"code", "message", "details"}


def uploaded_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_tampered_and_forged_signatures(app, client, new_org, tmp_path):
    _, raw = new_org("pro")
    body = presign(client, raw, 4)
    token, path = body["token"], body["path"]
    payload, stamp, mac = token.split(".")
    secret = app.extensions["cliptext"].settings.secret_key
    forged = {
        "payload byte": flip(token, 1),
        "timestamp byte": f"{payload}.{flip(stamp, 0)}.{mac}",
        "mac byte": f"{payload}.{stamp}.{flip(mac, 3)}",
        "truncated": token[:-4],
        "empty": "",
        "other salt": URLSafeTimedSerializer(secret).dumps({"u": body["id"]}, salt="something-else"),
        "other secret": URLSafeTimedSerializer("not-the-secret").dumps({"u": body["id"]}, salt=SALT),
        "no payload dict": URLSafeTimedSerializer(secret).dumps(body["id"], salt=SALT),
    }
    for name, candidate in forged.items():
        response = client.put(f"{path}?signature={candidate}", data=b"abcd")
        assert response.status_code == 403, name
        refused(response, 403, "FORBIDDEN")
    refused(client.put(path, data=b"abcd"), 403, "FORBIDDEN")  # no signature at all
    assert uploaded_files(tmp_path) == []
    assert client.put(f"{path}?signature={token}", data=b"abcd").status_code == 200


def test_expired_url(app, client, new_org, tmp_path):
    _, raw = new_org("pro")
    body = presign(client, raw, 4)

    class TwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 2 * 3600

    secret = app.extensions["cliptext"].settings.secret_key
    old = URLSafeTimedSerializer(secret, signer=TwoHoursAgo).dumps({"u": body["id"]}, salt=SALT)
    response = client.put(f"{body['path']}?signature={old}", data=b"abcd")
    refused(response, 403, "FORBIDDEN")
    assert "expired" in response.get_json()["error"]["message"]
    assert uploaded_files(tmp_path) == []


def test_reused_url_refused_even_when_raced(app, client, new_org, tmp_path):
    _, raw = new_org("pro")
    body = presign(client, raw, 4)
    url = f"{body['path']}?signature={body['token']}"
    statuses: list[int] = []
    start = threading.Barrier(8)

    def put() -> None:
        start.wait()
        statuses.append(app.test_client().put(url, data=b"abcd").status_code)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 7
    refused(client.put(url, data=b"wxyz"), 409, "CONFLICT")
    files = uploaded_files(tmp_path)
    assert len(files) == 1 and files[0].read_bytes() == b"abcd"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_refused_and_nothing_kept(app, client, new_org, tmp_path, chunked):
    _, raw = new_org("pro")
    body = presign(client, raw, 1000)
    url = f"{body['path']}?signature={body['token']}"
    if chunked:  # no Content-Length: cut off while streaming, at the declared size
        response = client.put(
            url, input_stream=io.BytesIO(b"x" * 50_000), environ_overrides={"wsgi.input_terminated": True}
        )
    else:
        response = client.put(url, data=b"x" * 1001)
    refused(response, 413, "PAYLOAD_TOO_LARGE")
    assert uploaded_files(tmp_path) == []
    with app.app_context():
        assert Upload.get(Upload.public_id == body["id"]).status == "pending"  # the URL is still usable
    assert client.put(url, data=b"y" * 1000).status_code == 200


def test_declared_size_over_the_maximum(make_app, env):
    app = make_app(max_upload_bytes=1000)
    from api.services.orgs import create_org

    with app.app_context():
        _, _, raw = create_org("small", "small@example.com", "pro")
    response = app.test_client().post(
        "/v1/uploads/presigned",
        json={"filename": "a.mp3", "content_type": "audio/mpeg", "size": 1001},
        headers={"Authorization": f"Bearer {raw}"},
    )
    refused(response, 413, "PAYLOAD_TOO_LARGE")
