"""Hostile HTTP found by a long fuzzing campaign: NUL in ids and values on PostgreSQL, numbers too long
to convert, bodies read before the caller is known, malformed chunked bodies under gunicorn, a
language code with a trailing newline, bytes left behind when an upload's row cannot be written."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import peewee as pw
import pytest
import requests
from api_servers import gunicorn_servers

from api.http_hooks import MAX_JSON_BYTES
from api.models import Upload
from tests import seed
from tests.media import AUDIO_DIR

BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
ENVELOPE = {"code", "message", "details"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE, body
    return body["error"]


def keyed(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


@BOTH_DATABASES
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/transcriptions/txn_%00"),
        ("DELETE", "/v1/transcriptions/%00"),
        ("GET", "/v1/orgs/%00"),
        ("POST", "/v1/orgs/org_%00/members"),
    ],
)
def test_an_id_holding_nul_names_nothing(client, new_org, database_url, method, path):
    _, raw = new_org("pro")
    body = {"email": "a@example.com", "role": "member"} if method == "POST" else None
    response = client.open(path, method=method, json=body, headers=keyed(raw))
    assert error_of(response, 404)["code"] == "NOT_FOUND"


@BOTH_DATABASES
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/uploads/complete", {"upload_id": "upl_\u0000"}, "upload_id"),
        ("/v1/transcriptions", {"upload_id": "upl_\u0000"}, "upload_id"),
        (
            "/v1/uploads/presigned",
            {"filename": "a.mp3", "content_type": "audio/\u0000", "size": 5},
            "content_type",
        ),
        (
            "/v1/transcriptions",
            {"upload_id": "upl_x", "prompt": ["ok", {"deep": "a\u0000b"}]},
            "prompt.1.deep",
        ),
    ],
)
def test_json_strings_holding_nul_are_422(client, new_org, database_url, path, body, field):
    _, raw = new_org("pro")
    response = client.post(path, data=json.dumps(body), headers=keyed(raw), content_type="application/json")
    error = error_of(response, 422)
    assert error["code"] == "VALIDATION_ERROR" and error["details"] == {"field": field}
    assert "NUL" in error["message"]


@BOTH_DATABASES
def test_query_values_holding_nul_are_422(client, new_org, database_url):
    _, raw = new_org("pro")
    error = error_of(client.get("/v1/transcriptions?starting_after=%00", headers=keyed(raw)), 422)
    assert error["details"] == {"field": "starting_after"}


@BOTH_DATABASES
def test_multipart_fields_holding_nul_are_422_and_store_nothing(client, new_org, database_url, tmp_path):
    _, raw = new_org("pro")
    audio = (AUDIO_DIR / "jfk.mp3").read_bytes()
    prompt = client.post(
        "/v1/transcriptions",
        data={"file": (io.BytesIO(audio), "jfk.mp3", "audio/mpeg"), "prompt": "a\x00b"},
        headers=keyed(raw),
    )
    assert error_of(prompt, 422)["details"] == {"field": "prompt"}
    part_type = client.post(
        "/v1/transcriptions",
        data={"file": (io.BytesIO(audio), "jfk.mp3", "audio/mp\x00eg")},
        headers=keyed(raw),
    )
    assert error_of(part_type, 422)["details"] == {"field": "file"}
    openai = client.post(
        "/v1/audio/transcriptions",
        data={"file": (io.BytesIO(audio), "jfk.mp3", "audio/mpeg"), "model": "whisper-1", "prompt": "\x00"},
        headers=keyed(raw),
    )
    assert openai.status_code in (400, 422), openai.get_data(as_text=True)
    assert "NUL" in openai.get_json()["error"]["message"]  # OpenAI's error shape on its endpoint
    storage = tmp_path / "storage"
    assert not storage.exists() or not [p for p in storage.rglob("*") if p.is_file()]


@pytest.mark.parametrize("path", ["/v1/uploads/complete", "/v1/uploads/presigned", "/v1/orgs/org_x/members"])
def test_a_number_too_long_to_convert_is_invalid_json_not_500(client, new_org, path):
    _, raw = new_org("pro")
    for digits in ("1" * 4301, "-" + "9" * 5000):
        response = client.post(
            path, data='{"upload_id": ' + digits + "}", headers=keyed(raw), content_type="application/json"
        )
        assert error_of(response, 400)["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32-le"])
def test_every_json_endpoint_reads_the_encodings_flask_reads(client, new_org, encoding):
    """A BOM or UTF-16 body was taken by POST /v1/transcriptions (Flask's get_json) and a 400 elsewhere."""
    _, raw = new_org("pro")
    body = json.dumps({"filename": "é.mp3", "content_type": "audio/mpeg", "size": 5}).encode(encoding)
    response = client.post(
        "/v1/uploads/presigned", data=body, headers=keyed(raw), content_type="application/json"
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["url"]
    invalid = client.post(
        "/v1/uploads/presigned", data=b"\xff\xfe{", headers=keyed(raw), content_type="application/json"
    )
    assert error_of(invalid, 400)["code"] == "VALIDATION_ERROR"


@BOTH_DATABASES
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le", "utf-8-sig"])
def test_checks_read_json_in_any_encoding(client, new_org, database_url, encoding):
    """In UTF-16 an escaped NUL or quote does not look like one to a byte pattern: checked after
    re-encoding, not skipped (a NUL reached PostgreSQL, deep nesting the parser's recursion limit)."""
    _, raw = new_org("pro")
    nul = json.dumps({"filename": "a.mp3", "content_type": "audio/\u0000", "size": 5}).encode(encoding)
    response = client.post(
        "/v1/uploads/presigned", data=nul, headers=keyed(raw), content_type="application/json"
    )
    assert error_of(response, 422)["details"] == {"field": "content_type"}
    deep = ('["\\"", ' + "[" * 3000 + "]" * 3000 + ', "y"]').encode(encoding)
    for path in ("/v1/uploads/presigned", "/v1/transcriptions"):
        response = client.post(path, data=deep, headers=keyed(raw), content_type="application/json")
        assert error_of(response, 400)["code"] == "VALIDATION_ERROR"


def test_no_body_is_read_before_the_key_is_checked(client, new_org):
    huge = b"[" * (MAX_JSON_BYTES + 1)
    for body in (huge, b'{"filename": "\\ud800"}'):
        anonymous = client.post("/v1/uploads/presigned", data=body, content_type="application/json")
        assert error_of(anonymous, 401)["code"] == "UNAUTHORIZED"
    _, raw = new_org("pro")
    too_big = client.post(
        "/v1/uploads/presigned", data=huge, headers=keyed(raw), content_type="application/json"
    )
    assert error_of(too_big, 413)["code"] == "PAYLOAD_TOO_LARGE"


def test_a_language_code_is_the_whole_value(client, new_org, app):
    org, raw = new_org("pro")
    with app.app_context():
        upload = seed.completed_upload(org, "jfk.mp3")
    for language in ("en\n", "en\r\n", "en\nfr"):
        response = client.post(
            "/v1/transcriptions",
            json={"upload_id": upload.public_id, "language": language},
            headers=keyed(raw),
        )
        assert error_of(response, 422)["details"]["fields"] == {
            "language": ["Not a language code (e.g. 'en')."]
        }
    openai = client.post(
        "/v1/audio/transcriptions",
        data={"file": (io.BytesIO(b"x"), "a.mp3", "audio/mpeg"), "model": "whisper-1", "language": "en\n"},
        headers=keyed(raw),
    )
    assert openai.status_code in (400, 422) and "language" in openai.get_data(as_text=True)
    ok = client.post(
        "/v1/transcriptions", json={"upload_id": upload.public_id, "language": "pt-BR"}, headers=keyed(raw)
    )
    assert ok.status_code == 202, ok.get_data(as_text=True)


def test_a_doubled_slash_is_not_redirected(client, new_org):
    _, raw = new_org("pro")
    response = client.get("/v1//orgs", headers=keyed(raw))
    assert error_of(response, 404)["code"] == "NOT_FOUND"


def test_bytes_of_a_multipart_upload_whose_row_cannot_be_written_are_removed(
    client, new_org, tmp_path, monkeypatch
):
    _, raw = new_org("pro")

    def database_gone(self, *args, **kwargs):
        raise pw.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Upload, "save", database_gone)  # the database fails at the insert, after the bytes
    response = client.post(
        "/v1/transcriptions",
        data={"file": (io.BytesIO((AUDIO_DIR / "jfk.mp3").read_bytes()), "jfk.mp3", "audio/mpeg")},
        headers=keyed(raw),
    )
    assert error_of(response, 503)["code"] == "SERVICE_UNAVAILABLE"
    stored = [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    assert stored == []


def raw_request(url: str, request: bytes) -> bytes:
    """One HTTP/1.1 exchange on a plain socket (a client no library would let us be)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    return answer


MALFORMED_CHUNKS = [b"zz\r\n", b"5\r\nhello-no-terminator", b"3\r\nabc\r\nq\r\n"]


def test_malformed_chunked_bodies_under_gunicorn_are_400(env, new_org, tmp_path: Path):
    _, raw = new_org("pro")
    with gunicorn_servers(1, env, tmp_path, threads=2) as (url,):
        for path, content_type in [
            ("/v1/uploads/presigned", b"application/json"),
            ("/v1/transcriptions", b"multipart/form-data; boundary=x"),
            ("/v1/audio/transcriptions", b"multipart/form-data; boundary=x"),
        ]:
            for key in (f"Authorization: Bearer {raw}\r\n".encode(), b""):
                for chunks in MALFORMED_CHUNKS:
                    answer = raw_request(
                        url,
                        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + key + b"Content-Type: "
                        + content_type + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + chunks,
                    )  # fmt: skip
                    status = answer.partition(b"\r\n")[0].split()[1]
                    assert status == (b"400" if key else b"401"), (path, key, chunks, answer)
                    body = json.loads(answer.partition(b"\r\n\r\n")[2])
                    assert set(body) == {"error"} and body["error"]["message"], answer
                    assert b"Traceback" not in answer and b"/work/" not in answer


# What gunicorn refuses before the app runs, and the status it gives (its own message is kept)
REFUSED_BY_GUNICORN = [
    (b"GARBAGE\r\n\r\n", 400),  # no method, path and version
    (b"GET /v1/orgs HTTP/9.9\r\nHost: x\r\n\r\n", 400),  # unknown HTTP version
    (b"G@T /v1/orgs HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # not a method token
    (b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    (b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),
    (b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\n folded: y\r\n\r\n", 400),
    (b"GET /v1/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (
        b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n",
        431,
    ),
    (b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
    (b"POST /v1/orgs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n", 501),
]


def test_requests_gunicorn_refuses_itself_answer_in_the_envelope(env, tmp_path: Path):
    """gunicorn answers these before the app sees them; with production's config the answer is the
    JSON envelope with the API's security headers, not gunicorn's HTML page."""
    with gunicorn_servers(1, env, tmp_path, threads=2) as (url,):
        for request, status in REFUSED_BY_GUNICORN:
            answer = raw_request(url, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert int(lines[0].split()[1]) == status, (request[:80], answer[:300])
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])
            }
            assert headers[b"content-type"] == b"application/json", answer[:300]
            assert headers[b"x-content-type-options"] == b"nosniff"
            assert headers[b"cache-control"] == b"no-store"
            error = json.loads(body)["error"]
            assert set(error) == {"code", "message", "details"} and error["message"], body
            assert error["code"] == ("PAYLOAD_TOO_LARGE" if status in (414, 431) else "VALIDATION_ERROR")
            assert len(error["message"]) <= 200 and b"<html" not in answer.lower()
        assert requests.get(f"{url}/v1/health", timeout=5).status_code == 200  # the worker stayed up


def test_a_multipart_body_cut_short_under_gunicorn_is_400_and_its_key_stays_free(env, new_org, tmp_path):
    """A client gone mid-upload (Content-Length announced, part sent, write side shut): gunicorn hands the
    app what came and werkzeug's form parser ends quietly there. The answer was a 422 "file part
    required", stored under the Idempotency-Key, so the retry of the whole body got 409 for 24 h."""
    _, raw = new_org("enterprise", custom_rate_limit=1000)
    prepared = requests.Request(
        "POST",
        "http://x/v1/transcriptions",
        files={"file": ("jfk.mp3", (AUDIO_DIR / "jfk.mp3").read_bytes(), "audio/mpeg")},
    ).prepare()
    head = (
        f"POST /v1/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {raw}\r\n"
        f"Idempotency-Key: cut-short\r\nContent-Type: {prepared.headers['Content-Type']}\r\n"
        f"Content-Length: {len(prepared.body)}\r\n\r\n"
    ).encode()
    with gunicorn_servers(1, env, tmp_path, threads=2) as (url,):
        parts = urlsplit(url)
        for share in (0.5, 0.999):
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(head + prepared.body[: int(len(prepared.body) * share)])
                sock.shutdown(socket.SHUT_WR)
                answer = sock.makefile("rb").read()
            status, _, rest = answer.partition(b"\r\n")
            assert status.split()[1] == b"400", (share, answer[:600])
            assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "VALIDATION_ERROR"
        whole = requests.post(
            f"{url}/v1/transcriptions",
            data=prepared.body,
            headers={
                "Authorization": f"Bearer {raw}",
                "Idempotency-Key": "cut-short",
                "Content-Type": prepared.headers["Content-Type"],
            },
            timeout=30,
        )
        assert whole.status_code == 202, whole.text
