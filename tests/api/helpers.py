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


def presign(client, headers: dict[str, str], data: bytes, filename: str = "jfk.mp3") -> dict:
    """A presigned upload for `data` (the response body: id, url, headers)."""
    response = client.post(
        "/v1/uploads/presigned",
        json={"filename": filename, "content_type": "audio/mpeg", "size": len(data)},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def put_file(client, headers: dict[str, str], path: Path, filename: str | None = None) -> str:
    """Presign and PUT a real file, not completed yet; returns the upload id."""
    data = path.read_bytes()
    body = presign(client, headers, data, filename or path.name)
    put = client.put(local_path(body["url"]), data=data, headers=body["headers"])
    assert put.status_code == 200, put.get_json()
    return body["id"]


def local_path(url: str) -> str:
    """The path + query of an absolute URL (the test client talks to the app directly)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def stored_files(tmp_path: Path) -> list[str]:
    """Every file under the test's local storage (tmp_path / "storage"), relative, sorted."""
    root = tmp_path / "storage"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def app_config(app) -> dict:
    """create_app overrides for another process (or app) on the same database, storage and Redis."""
    state = app.extensions["cliptext"]
    return {
        "database_url": state.settings.database_url,
        "redis_url": state.settings.redis_url,
        "storage_url": state.settings.storage_url,
        "REDIS_KEY_PREFIX": state.redis_prefix,
        "RQ_QUEUE": state.queue_name,
        "TESTING": True,
    }
