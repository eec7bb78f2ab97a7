"""Hostile input: file names that try to escape the storage folder, strings no database can store,
webhook targets on private networks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from api.http_hooks import MAX_JSON_DEPTH, json_depth
from api.models import Upload
from tests import seed
from tests.media import AUDIO_DIR

JFK_MP3 = AUDIO_DIR / "jfk.mp3"

HOSTILE_NAMES = [
    "../../../../tmp/escaped.mp3",
    "..\\..\\..\\windows\\escaped.mp3",
    "/etc/cron.d/escaped.mp3",
    "a\x00b.mp3",
    "line\nbreak\r.mp3",
    "\u202e3pm.exe.mp3",  # right-to-left override disguising the name
    "%2e%2e%2fescaped.mp3",
    "x" * 250 + ".mp3",
]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def check_stored_name(name: str) -> None:
    assert name and len(name) <= 255
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert not any(ord(c) < 32 or c in "\x7f\u202e" for c in name), repr(name)


@pytest.mark.parametrize("filename", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_presign_hostile_filenames_are_only_display_names(app, client, new_org, tmp_path, filename):
    _, raw = new_org("pro")
    before = files_under(tmp_path)
    response = client.post(
        "/v1/uploads/presigned",
        data=json.dumps({"filename": filename, "content_type": "audio/mpeg", "size": 4}),
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert response.status_code in (201, 422), response.get_data(as_text=True)
    if response.status_code == 422:
        assert_envelope(response, 422, "VALIDATION_ERROR")
        return
    body = response.get_json()
    put = client.put(body["url"].split("8000", 1)[1], data=b"abcd", headers=body["headers"])
    assert put.status_code == 200
    check_stored_name(put.get_json()["filename"])
    with app.app_context():
        upload = Upload.get(Upload.public_id == body["id"])
    check_stored_name(upload.filename)
    new = files_under(tmp_path) - before
    storage = tmp_path / "storage"
    assert {p for p in new if not p.name.startswith("api.db")} == {storage / upload.storage_key}


def test_ten_kilobyte_filenames(client, new_org, tmp_path):
    """10 KB of characters: refused in the JSON form (field limit), cut to a display name in multipart."""
    _, raw = new_org("pro")
    key = {"Authorization": f"Bearer {raw}"}
    huge = "é" * 10_240 + ".mp3"
    error = assert_envelope(
        client.post(
            "/v1/uploads/presigned",
            json={"filename": huge, "content_type": "audio/mpeg", "size": 4},
            headers=key,
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert "filename" in error["details"]["fields"]
    before = files_under(tmp_path)
    data = JFK_MP3.read_bytes() if JFK_MP3.exists() else b"not audio"
    response = client.post(
        "/v1/transcriptions",
        data={"file": (io.BytesIO(data), "../" * 3000 + huge, "audio/mpeg")},
        headers=key,
    )
    new = {p for p in files_under(tmp_path) - before if not p.name.startswith("api.db")}
    assert all((tmp_path / "storage") in p.parents for p in new), new
    if JFK_MP3.exists():
        assert response.status_code == 202, response.get_data(as_text=True)
        upload_id = response.get_json()["upload_id"]
        with client.application.app_context():
            stored = Upload.get(Upload.public_id == upload_id).filename
        check_stored_name(stored)
        assert stored.endswith(".mp3")
    else:
        assert_envelope(response, 422, "UNSUPPORTED_MEDIA")


@pytest.mark.parametrize(
    "body",
    [
        '{"filename": "\\ud800.mp3", "content_type": "audio/mpeg", "size": 4}',
        '{"filename": "a.mp3", "content_type": "audio/\\udfff", "size": 4}',
        '{"filename": "a.mp3", "content_type": "audio/mpeg", "size": 4, "\\ud83d": 1}',
    ],
)
def test_lone_surrogates_are_422_not_500(client, new_org, body):
    _, raw = new_org("pro")
    response = client.post(
        "/v1/uploads/presigned",
        data=body,
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert_envelope(response, 422, "VALIDATION_ERROR")


def test_a_real_surrogate_pair_is_fine(client, new_org):
    _, raw = new_org("pro")
    response = client.post(
        "/v1/uploads/presigned",
        data='{"filename": "\\ud83d\\ude00.mp3", "content_type": "audio/mpeg", "size": 4}',
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert response.status_code == 201


PRIVATE_TARGETS = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",  # shorthand for 127.0.0.1
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/hook",
    "http://0177.0.0.1/hook",  # octal
    "http://localhost:8080/hook",
    "http://api.localhost/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/hook",
]


@pytest.fixture
def completed_upload(app, new_org):
    org, raw = new_org("enterprise", custom_rate_limit=10_000)
    with app.app_context():
        upload = seed.completed_upload(org, "a.mp3")
    return upload.public_id, {"Authorization": f"Bearer {raw}"}


@pytest.mark.parametrize("target", PRIVATE_TARGETS)
def test_private_webhook_targets_refused_by_default(client, completed_upload, target):
    upload_id, key = completed_upload
    response = client.post(
        "/v1/transcriptions", json={"upload_id": upload_id, "webhook_url": target}, headers=key
    )
    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert "webhook_url" in json.dumps(error["details"])


@pytest.mark.parametrize(
    "target",
    [
        "https://hooks.example.com/cliptext",
        "https://hooks.example.com:8443/cliptext",  # any port
        "https://alice:s3cret@hooks.example.com/cliptext",  # Basic credentials, sent by the worker
    ],
)
def test_public_webhook_target_accepted(client, completed_upload, target):
    upload_id, key = completed_upload
    response = client.post(
        "/v1/transcriptions", json={"upload_id": upload_id, "webhook_url": target}, headers=key
    )
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "target",
    [
        "http://1572395790/hook",  # a public address as one number: which address is meant is unclear
        "http://93.184.14/hook",  # shorthand
        "https://alice:s3cret@93.184.14/hook",
    ],
)
def test_webhook_targets_the_worker_would_refuse_are_refused_when_submitted(client, completed_upload, target):
    """The worker connects through ssrfguard, which refuses these hosts: they are a 422 now, not a
    transcription whose webhook is dropped later. Credentials never reach the message."""
    upload_id, key = completed_upload
    response = client.post(
        "/v1/transcriptions", json={"upload_id": upload_id, "webhook_url": target}, headers=key
    )
    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"] == {"field": "webhook_url"} and "s3cret" not in error["message"]


def _nested(depth: int, kind: str) -> str:
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    inner = '"\\ud800"' if kind == "surrogate" else ""
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 100_000])
@pytest.mark.parametrize("kind", ["array", "object", "surrogate"])
@pytest.mark.parametrize("path", ["/v1/uploads/presigned", "/v1/uploads/complete", "/v1/transcriptions"])
def test_json_nested_past_any_parser_is_400_not_500(client, new_org, depth, kind, path):
    _, raw = new_org("pro")
    response = client.post(
        path,
        data=_nested(depth, kind),
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert str(MAX_JSON_DEPTH) in error["message"]


def test_json_as_deep_as_allowed_reaches_the_view(client, new_org):
    _, raw = new_org("pro")
    response = client.post(
        "/v1/uploads/presigned",
        data=json.dumps(
            {"filename": "a.mp3", "content_type": "audio/mpeg", "size": 4, "x": _nested(60, "array")}
        ),
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert response.status_code in (201, 422)  # the view decided: brackets inside a string do not nest
    body = '{"filename": "a.mp3", "extra": ' + _nested(MAX_JSON_DEPTH - 1, "array") + "}"
    assert json_depth(body.encode()) == MAX_JSON_DEPTH
    response = client.post(
        "/v1/uploads/presigned",
        data=body,
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert_envelope(response, 422, "VALIDATION_ERROR")  # the schema's answer, not the depth guard's


@pytest.mark.parametrize(
    "raw_string",
    [b"\xed\xa0\x80.mp3", b"a\xed\xbf\xbf.mp3", b"\xff\xfe.mp3", b"a\xc3.mp3"],
    ids=["high-surrogate", "low-surrogate", "not-utf8", "cut-sequence"],
)
def test_invalid_utf8_in_a_json_body_is_400_not_500(client, new_org, raw_string):
    """Surrogates written as raw bytes (not as \\u escapes) are not UTF-8: Python's JSON reader let them
    through (it decodes with surrogatepass) and the database driver failed on them, a 500."""
    _, raw = new_org("pro")
    body = b'{"filename": "' + raw_string + b'", "content_type": "audio/mpeg", "size": 4}'
    response = client.post(
        "/v1/uploads/presigned",
        data=body,
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "UTF-8" in response.get_json()["error"]["message"]
