"""Limits under concurrency: 50 clients at once over TWO gunicorn processes sharing Redis and the database.

The free plan's 10 requests a minute admit exactly 10, the rest are
429 with a Retry-After that does not overshoot the window's real reset; the concurrent-upload cap holds
when 50 presign calls race across both processes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
from api_servers import gunicorn_servers

from api.models import Upload

CLIENTS = 50


def burst(urls: list[str], method: str, path: str, headers: dict[str, str], json: dict | None = None):
    """CLIENTS requests released together, alternating between the servers; (response, time) each."""
    results: list[tuple[requests.Response, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def call(i: int) -> None:
        session = requests.Session()
        start.wait()
        response = session.request(method, urls[i % len(urls)] + path, headers=headers, json=json, timeout=60)
        with lock:
            results.append((response, time.time()))
        session.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == CLIENTS
    return results


def test_free_plan_admits_exactly_ten_across_two_processes(
    app, new_org, env, tmp_path: Path, redis_conn: redis.Redis
):
    org, raw = new_org("free")
    key = {"Authorization": f"Bearer {raw}"}
    with gunicorn_servers(2, env, tmp_path) as urls:
        results = burst(urls, "GET", "/v1/orgs", key)
        window_keys = list(redis_conn.scan_iter(match=f"*ratelimit/{org.public_id}/*"))
        assert len(window_keys) == 1, window_keys
        window_end = time.time() + redis_conn.pttl(window_keys[0]) / 1000

        statuses = Counter(r.status_code for r, _ in results)
        assert statuses == {200: 10, 429: 40}, statuses
        admitted = [r for r, _ in results if r.status_code == 200]
        # read after the hit: under a burst it may already count later requests, never more than left
        assert all(0 <= int(r.headers["RateLimit-Remaining"]) <= 9 for r in admitted)
        for response, at in results:
            headers = response.headers
            assert headers["RateLimit-Limit"] == "10"
            reset = int(headers["RateLimit-Reset"])
            assert 0 <= reset <= 60
            assert at + reset <= window_end + 1.0  # never later than the real reset
            if response.status_code == 429:
                body = response.json()
                assert body["error"]["code"] == "RATE_LIMITED"
                assert headers["RateLimit-Remaining"] == "0"
                retry_after = int(headers["Retry-After"])
                assert 1 <= retry_after <= 60
                assert at + retry_after <= window_end + 1.0  # waiting that long is enough, never too long
                assert at + retry_after >= window_end - 2.0  # ... and not a guess far too early
        # the window really is shared: either process still refuses
        for url in urls:
            assert requests.get(f"{url}/v1/orgs", headers=key, timeout=10).status_code == 429
        # unauthenticated answers are not counted against anyone
        assert requests.get(f"{urls[0]}/v1/health", timeout=10).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_concurrent_upload_cap_holds_across_two_processes(app, new_org, env, tmp_path: Path):
    org, raw = new_org("pro")  # 60 requests/minute (50 fit), 5 concurrent uploads
    key = {"Authorization": f"Bearer {raw}"}
    body = {"filename": "a.mp3", "content_type": "audio/mpeg", "size": 1000}
    with gunicorn_servers(2, env, tmp_path) as urls:
        results = burst(urls, "POST", "/v1/uploads/presigned", key, json=body)
    statuses = Counter(r.status_code for r, _ in results)
    assert statuses == {201: 5, 429: 45}, (statuses, [r.text for r, _ in results if r.status_code >= 500][:2])
    refused = {r.json()["error"]["code"] for r, _ in results if r.status_code == 429}
    assert refused == {"CONCURRENT_UPLOAD_LIMIT"}
    with app.app_context():
        assert Upload.select().where(Upload.organization == org).count() == 5
