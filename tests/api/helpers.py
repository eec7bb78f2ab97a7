"""Helpers the API tests import by module path (not from `conftest`, which names a different module
depending on which test folders a run collects first)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tests.media import AUDIO_DIR

JFK_MP3 = AUDIO_DIR / "jfk.mp3"


def upload_file(client, headers: dict[str, str], path: Path, filename: str | None = None) -> str:
    """Presign, PUT and complete a real file; returns the upload id."""
    upload_id = put_file(client, headers, path, filename)
    done = client.post("/v1/uploads/complete", json={"upload_id": upload_id}, headers=headers)
    assert done.status_code == 200, done.get_json()
    return upload_id


def put_file(client, headers: dict[str, str], path: Path, filename: str | None = None) -> str:
    """Presign and PUT a real file, not completed yet; returns the upload id."""
    data = path.read_bytes()
    name = filename or path.name
    response = client.post(
        "/v1/uploads/presigned",
        json={"filename": name, "content_type": "audio/mpeg", "size": len(data)},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    put = client.put(local_path(body["url"]), data=data, headers=body["headers"])
    assert put.status_code == 200, put.get_json()
    return body["id"]


def local_path(url: str) -> str:
    """The path + query of an absolute URL (the test client talks to the app directly)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
