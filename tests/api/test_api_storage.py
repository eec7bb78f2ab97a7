"""Storage selection: S3 mode presigns a real boto3 PUT URL (signing is local, no bucket needed)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from api.storage import LocalStorage, S3Storage, open_storage


def test_s3_presigned_put(make_app, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    app = make_app(storage_url="s3://cliptext-audio/prod/uploads")
    from api.services.orgs import create_org

    with app.app_context():
        _, _, raw = create_org("s3", "s3@example.com", "pro")
    response = app.test_client().post(
        "/v1/uploads/presigned",
        json={"filename": "meeting.wav", "content_type": "audio/wav", "size": 1234},
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    url = urlsplit(body["url"])
    assert body["method"] == "PUT" and body["headers"] == {"Content-Type": "audio/wav"}
    assert "cliptext-audio" in url.netloc + url.path
    assert "prod/uploads/uploads/org_" in url.path
    assert body["id"] in url.path and "meeting" not in url.path  # object names never from user input
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["3600"] and "X-Amz-Signature" in query
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) >= {"content-type", "content-length", "host"}


def test_open_storage_and_key_checks(tmp_path):
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage(str(tmp_path / "plain")), LocalStorage)
    with pytest.raises(ValueError):
        open_storage("ftp://host/x")
    local = LocalStorage(tmp_path)
    for bad in ("../etc/passwd", "/abs", "a/../../b", "a b", ""):
        with pytest.raises(ValueError):
            local.path(bad)
    assert S3Storage.__name__ == "S3Storage"
