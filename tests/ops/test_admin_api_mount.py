"""/admin/rq mounted in the API (api.admin.mount_admin): guessing throttled, changes only from its pages.

The real app (create_app) with a SQLite file and real Redis (db 12, or CLIPTEXT_TEST_ADMIN_REDIS, under a
key prefix of the test's own), through Flask's test client; the client address is set per request to
play several clients.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue

from api import create_app
from api.db import db

REDIS_URL = os.environ.get("CLIPTEXT_TEST_ADMIN_REDIS", "redis://127.0.0.1:6379/12")
USER, PASSWORD = "operator", "s3cret-pw"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


RIGHT = basic(USER, PASSWORD)


@pytest.fixture
def make_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPTEXT_SECRET_KEY", secrets.token_urlsafe(32))
    prefix = f"t{secrets.token_hex(5)}:"
    conn = redis.Redis.from_url(REDIS_URL)

    def make(**config):
        app = create_app(
            {
                "database_url": f"sqlite:///{tmp_path / 'api.db'}",
                "redis_url": REDIS_URL,
                "storage_url": f"file://{tmp_path / 'storage'}",
                "admin_user": USER,
                "admin_password": PASSWORD,
                "REDIS_KEY_PREFIX": prefix,
                "TESTING": True,
                **config,
            }
        )
        return app.test_client()

    yield make
    if db.obj is not None and not db.is_closed():
        db.close()
    for key in conn.scan_iter(match=f"*{prefix}*"):  # flask-limiter's keys too
        conn.delete(key)
    conn.close()


def get(client, ip: str, headers: dict | None = None, path: str = "/admin/rq/"):
    return client.get(path, headers=headers or {}, environ_base={"REMOTE_ADDR": ip})


def test_guessing_is_throttled_per_client_address(make_client) -> None:
    """200 guesses from one address went through in 0.1 s: now 10 per window, then 429 for everyone
    there, the right password included, until the window ends; other addresses are not affected."""
    client = make_client()
    codes = [get(client, "198.51.100.7", basic(USER, f"guess{i}")).status_code for i in range(30)]
    assert codes[:9] == [401] * 9 and set(codes[9:]) == {429}, codes
    refused = get(client, "198.51.100.7", RIGHT)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 300
    error = refused.get_json()["error"]
    assert error["code"] == "RATE_LIMITED" and error["details"] == {"retry_after": wait}
    assert get(client, "198.51.100.8", RIGHT).status_code == 200  # another address
    # another API process shares the counters (Redis), not a per-process memory
    assert get(make_client(), "198.51.100.7", RIGHT).status_code == 429


def test_requests_without_credentials_are_not_guesses(make_client) -> None:
    """A browser first asks without credentials, then shows its prompt: those do not count."""
    client = make_client()
    for _ in range(20):
        answer = get(client, "198.51.100.9")
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    assert answer.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert get(client, "198.51.100.9", RIGHT).status_code == 200


def test_the_lockout_ends_with_its_window(make_client) -> None:
    client = make_client(ADMIN_AUTH_MAX_FAILURES=3, ADMIN_AUTH_WINDOW_SECONDS=1)
    codes = [get(client, "198.51.100.10", basic(USER, "nope")).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert get(client, "198.51.100.10", RIGHT).status_code == 429
    time.sleep(1.6)
    assert get(client, "198.51.100.10", RIGHT).status_code == 200


@pytest.fixture
def failed_jobs(make_client) -> Iterator[tuple[object, Queue]]:
    client = make_client()
    conn = redis.Redis.from_url(REDIS_URL)
    q = Queue(f"admin-mount-{secrets.token_hex(4)}", connection=conn)
    for i in range(2):
        job = q.enqueue("jobs.transcribe.run_transcription", f"txn_{i}", job_id=f"{q.name}-{i}")
        q.remove(job)
        q.failed_job_registry.add(job, ttl=3600, exc_string="boom")
    yield client, q
    for job_id in q.failed_job_registry.get_job_ids():
        q.failed_job_registry.remove(job_id, delete_job=True)
    q.delete(delete_jobs=True)
    conn.close()


def test_a_navigation_without_origin_or_referer_changes_nothing(failed_jobs) -> None:
    """A cross-site page with referrerpolicy=no-referrer navigated the operator's browser to the
    requeue-all GET: no Origin, no Referer, and every failed job was requeued."""
    client, q = failed_jobs
    url = f"/admin/rq/requeue/{q.name}"
    assert client.get(url, headers=RIGHT).status_code == 403
    navigation = {**RIGHT, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert client.get(url, headers=navigation).status_code == 403
    assert client.head(url, headers=RIGHT).status_code == 403
    typed = client.get(url, headers={**RIGHT, "Sec-Fetch-Site": "none"})  # the operator typed it
    assert typed.status_code == 405 and typed.headers["Allow"] == "POST"
    assert client.post(url, headers=RIGHT).status_code == 403  # a POST needs a same-origin sign too
    assert client.post(url, headers={**RIGHT, "Origin": "null"}).status_code == 403
    assert q.failed_job_registry.count == 2 and q.count == 0
    own = client.post(url, headers={**RIGHT, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own.get_json()["count"] == 2
    assert q.failed_job_registry.count == 0 and q.count == 2


def test_dashboard_pages_send_their_origin(failed_jobs) -> None:
    """Referrer-Policy same-origin (the API's no-referrer elsewhere): the dashboard's own POSTs then carry
    its Origin in every browser, not "null"; and no other site may frame it."""
    client, _ = failed_jobs
    page = client.get("/admin/rq/", headers=RIGHT)
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "same-origin" and page.headers["X-Frame-Options"] == "DENY"
    assert client.get("/v1/health").headers["Referrer-Policy"] == "no-referrer"
