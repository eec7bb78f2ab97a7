"""A browser app at http://localhost:5173 (CLIPTEXT_CORS_ORIGINS) using the API over real HTTP, as a
browser sends it: a preflight (Origin, Access-Control-Request-Method, -Headers) before each request that
carries a key, then the request with its Origin; the signed upload PUT from any origin.

What a page cannot read is a generic network error to its script: every answer it needs, errors
included, carries Access-Control-Allow-Origin, and the headers it reads are exposed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server

from api.services.orgs import create_org
from tests.api.helpers import JFK_MP3
from tests.api.test_api_formats_ops import _complete

ORIGIN = "http://localhost:5173"
STRANGER = "https://evil.example"
# what OpenAI's JavaScript SDK sends with every request (Firefox lists User-Agent too)
OPENAI_SDK_HEADERS = (
    "authorization,user-agent,x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,"
    "x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout"
)


class Browser:
    """Sends what a page's fetch() makes the browser send, to a real server."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def preflight(self, path: str, method: str, headers: str, origin: str = ORIGIN) -> requests.Response:
        return requests.options(
            self.base + path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            },
            timeout=30,
        )

    def fetch(self, method: str, path: str, origin: str = ORIGIN, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}", "Origin": origin, **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)


def allows(preflight: requests.Response, method: str, headers: str) -> bool:
    """Whether a browser lets the request through after this preflight answer."""
    h = preflight.headers
    if not preflight.ok or h.get("Access-Control-Allow-Origin") not in (ORIGIN, "*"):
        return False
    methods = {m.strip().upper() for m in h.get("Access-Control-Allow-Methods", "").split(",")}
    granted = {x.strip().lower() for x in h.get("Access-Control-Allow-Headers", "").split(",")}
    return method in methods and {x.strip().lower() for x in headers.split(",")} <= granted


def readable(response: requests.Response, origin: str = ORIGIN) -> bool:
    return response.headers.get("Access-Control-Allow-Origin") in (origin, "*")


def exposed(response: requests.Response) -> set[str]:
    return {x.strip().lower() for x in response.headers.get("Access-Control-Expose-Headers", "").split(",")}


def varies_on_origin(response: requests.Response) -> bool:
    return "origin" in {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}


@pytest.fixture
def serve(make_app) -> Iterator:
    servers = []

    def start(plan: str = "pro", **overrides) -> tuple[object, Browser]:
        app = make_app(cors_origins=(ORIGIN,), **overrides)
        with app.app_context():
            _, _, raw = create_org("Org s16", f"owner-{len(servers)}@example.com", plan)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return app, Browser(f"http://127.0.0.1:{server.server_port}", raw)

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=10)


def test_the_whole_browser_flow(serve):
    app, page = serve()
    data = JFK_MP3.read_bytes()
    sent = "authorization,content-type,idempotency-key"

    assert allows(page.preflight("/v1/uploads/presigned", "POST", sent), "POST", sent)
    body = {"filename": "jfk.mp3", "content_type": "audio/mpeg", "size": len(data)}
    presigned = page.fetch("POST", "/v1/uploads/presigned", json=body, headers={"Idempotency-Key": "p1"})
    assert presigned.status_code == 201 and readable(presigned) and varies_on_origin(presigned)
    assert {"ratelimit-remaining", "x-request-id", "idempotent-replayed"} <= exposed(presigned)
    replay = page.fetch("POST", "/v1/uploads/presigned", json=body, headers={"Idempotency-Key": "p1"})
    assert readable(replay) and replay.headers["Idempotent-Replayed"] == "true"

    # the signed URL: a page of any origin, no key, the headers the presign answered
    upload = presigned.json()
    path = "/v1/" + upload["url"].split("/v1/", 1)[1]
    put_headers = ",".join(name.lower() for name in upload["headers"])
    assert allows(page.preflight(path, "PUT", put_headers, origin=STRANGER), "PUT", put_headers)
    put = requests.put(
        page.base + path, data=data, headers={**upload["headers"], "Origin": STRANGER}, timeout=30
    )
    assert put.status_code == 200 and readable(put, STRANGER)
    again = requests.put(
        page.base + path, data=data, headers={**upload["headers"], "Origin": STRANGER}, timeout=30
    )
    assert again.status_code == 409 and readable(again, STRANGER)  # its error envelope too

    json_headers = "authorization,content-type"
    assert allows(page.preflight("/v1/uploads/complete", "POST", json_headers), "POST", json_headers)
    done = page.fetch("POST", "/v1/uploads/complete", json={"upload_id": upload["id"]})
    assert done.status_code == 200 and readable(done)

    created = page.fetch("POST", "/v1/transcriptions", json={"upload_id": upload["id"]})
    assert created.status_code == 202 and readable(created)
    txn = created.json()["id"]
    assert allows(page.preflight(f"/v1/transcriptions/{txn}", "GET", "authorization"), "GET", "authorization")
    assert page.fetch("GET", f"/v1/transcriptions/{txn}").json()["status"] == "queued"
    early = page.fetch("GET", f"/v1/transcriptions/{txn}?format=vtt")
    assert early.status_code == 409 and readable(early) and early.json()["error"]["code"] == "CONFLICT"
    _complete(app, txn, words=False)
    vtt = page.fetch("GET", f"/v1/transcriptions/{txn}?format=vtt")  # a Blob URL for <track> (no key there)
    assert vtt.status_code == 200 and readable(vtt) and vtt.text.startswith("WEBVTT")
    assert varies_on_origin(vtt) and "accept" in vtt.headers["Vary"].lower()

    listed = page.fetch("GET", "/v1/transcriptions?limit=1")
    assert readable(listed) and listed.json()["has_more"] is False and len(listed.json()["data"]) == 1

    # multipart create straight from a <form>/FormData: the browser sets the boundary itself
    multipart = page.fetch("POST", "/v1/transcriptions", files={"file": ("jfk.mp3", data, "audio/mpeg")})
    assert multipart.status_code == 202 and readable(multipart)

    assert allows(
        page.preflight(f"/v1/transcriptions/{txn}", "DELETE", "authorization"), "DELETE", "authorization"
    )
    deleted = page.fetch("DELETE", f"/v1/transcriptions/{txn}")
    assert deleted.status_code == 204 and readable(deleted)
    gone = page.fetch("GET", f"/v1/transcriptions/{txn}")
    assert gone.status_code == 404 and readable(gone) and gone.json()["error"]["code"] == "NOT_FOUND"


def test_error_envelopes_are_readable_by_the_page(serve):
    _, page = serve(plan="free", max_upload_bytes=100_000)
    for method, path, kwargs, status in [
        ("GET", "/v1/transcriptions", {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("GET", "/v1/transcriptions/txn_nope", {}, 404),
        ("GET", "/v1/transcriptions?limit=abc", {}, 422),
        ("POST", "/v1/transcriptions", {"files": {"file": ("a.mp3", b"\xff" * 200_000, "audio/mpeg")}}, 413),
    ]:
        answer = page.fetch(method, path, **kwargs)
        assert answer.status_code == status and readable(answer), (path, answer.status_code)
        assert answer.json()["error"]["code"]
    for _ in range(20):  # the free plan's 10 requests a minute
        answer = page.fetch("GET", "/v1/transcriptions")
        if answer.status_code == 429:
            break
    assert answer.status_code == 429 and readable(answer)
    assert {"retry-after", "ratelimit-reset"} <= exposed(answer) and int(answer.headers["Retry-After"]) > 0


def test_a_page_of_another_origin_is_refused_cleanly(serve):
    _, page = serve()
    refused = page.preflight("/v1/transcriptions", "POST", "authorization,content-type", origin=STRANGER)
    assert not allows(refused, "POST", "authorization,content-type")
    assert not any(name.lower().startswith("access-control-") for name in refused.headers)
    answer = page.fetch("GET", "/v1/transcriptions", origin=STRANGER)
    assert not readable(answer, STRANGER)
    purge = page.preflight("/v1/transcriptions", "PURGE", "authorization")
    assert not allows(purge, "PURGE", "authorization")  # no such method: no Allow-Methods granted


def test_openai_s_javascript_sdk_gets_through_its_preflight(serve):
    """openai-node (dangerouslyAllowBrowser) sends X-Stainless-* and User-Agent with every request: the
    preflight granted only `authorization`, so the browser never sent the request."""
    _, page = serve()
    for path, method in (("/v1/audio/transcriptions", "POST"), ("/v1/models", "GET")):
        answer = page.preflight(path, method, OPENAI_SDK_HEADERS)
        assert allows(answer, method, OPENAI_SDK_HEADERS), answer.headers.get("Access-Control-Allow-Headers")
        assert answer.headers["Access-Control-Max-Age"] == "600"
    assert not allows(page.preflight("/v1/models", "GET", "x-secret"), "GET", "x-secret")


def test_the_page_reads_that_a_pending_openai_request_must_not_be_retried(serve):
    """The 504 of a transcription still running says `x-should-retry: false`; unexposed, OpenAI's SDK
    in a browser saw no such header and retried the 504, sending the file again (twice by default)."""
    _, page = serve(openai_wait_seconds=0.2)
    files = {"file": ("jfk.mp3", JFK_MP3.read_bytes(), "audio/mpeg")}
    pending = page.fetch("POST", "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert pending.status_code == 504 and readable(pending)
    assert pending.headers["x-should-retry"] == "false"
    assert {"x-should-retry", "location", "x-request-id"} <= exposed(pending)


def test_every_api_answer_varies_on_origin_for_caches(serve):
    """A cacheable answer fetched without Origin (the docs' assets: public for a day) said no
    `Vary: Origin`, so a cache could hand it, without Access-Control-Allow-Origin, to the page."""
    _, page = serve()
    asset = "/v1/docs/assets/init.js"
    plain = requests.get(page.base + asset, timeout=30)
    assert plain.status_code == 200 and "public" in plain.headers["Cache-Control"]
    assert varies_on_origin(plain)
    assert varies_on_origin(requests.get(page.base + asset, headers={"Origin": STRANGER}, timeout=30))
    from_page = requests.get(page.base + asset, headers={"Origin": ORIGIN}, timeout=30)
    assert readable(from_page) and varies_on_origin(from_page)
    assert [v for v in from_page.raw.headers.getlist("Vary") if "origin" in v.lower()] == ["Origin"]
    health = requests.get(page.base + "/v1/health", timeout=30)
    assert varies_on_origin(health) and "Access-Control-Allow-Origin" not in health.headers
