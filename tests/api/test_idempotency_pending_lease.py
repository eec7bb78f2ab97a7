"""An Idempotency-Key's "in progress" marker is a lease, renewed while its request runs.

It was set for a fixed 300 s: a create that ran longer let it expire, and a client's retry with the key
ran the request a second time (two transcriptions, two charges for one key). Now it lives for
CLIPTEXT_UPLOAD_SLOT_LEASE (2 s here) and the process's lease thread renews it: a request that runs for
several leases keeps answering its retries 409 "in progress", and the marker of a request whose process
was killed lapses within the lease, so that a retry then runs.

The request is made slow for real: another connection holds a lock on the upload's row (FOR UPDATE on
PostgreSQL, the write lock on SQLite), which create waits for under the marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from api.db import db, locked, write_transaction
from api.models import Transcription, Upload
from api.state import state
from tests.api.helpers import JFK_MP3, app_config, upload_file
from tests.api.test_upload_lifecycle_kills import group_members, serve, wait_until_dead

LEASE = 2.0  # CLIPTEXT_UPLOAD_SLOT_LEASE of these tests' apps
KEY = "create-once"


@pytest.fixture
def app(make_app, monkeypatch):
    monkeypatch.setenv("CLIPTEXT_UPLOAD_SLOT_LEASE", str(LEASE))
    return make_app()


def org_with_upload(app, new_org) -> tuple[str, dict[str, str], str]:
    """(organization public id, headers with the Idempotency-Key, completed upload id); no rate limit in
    the way of the retries."""
    org, headers = new_org("enterprise", custom_rate_limit=100_000)
    upload_id = upload_file(app.test_client(), headers, JFK_MP3)
    return org.public_id, {**headers, "Idempotency-Key": KEY}, upload_id


def marker_key(app, org_public_id: str) -> str:
    with app.app_context():
        return state().key("idempotency", org_public_id, hashlib.sha256(KEY.encode()).hexdigest())


@contextlib.contextmanager
def upload_row_locked(app, upload_id: str) -> Iterator[None]:
    """The upload's row locked by another connection until the block ends: create waits for it."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with app.app_context(), db.connection_context(), write_transaction():
            locked(Upload.select().where(Upload.public_id == upload_id)).first()
            taken.set()
            release.wait(60)

    holder = threading.Thread(target=hold, name="upload-row-lock")
    holder.start()
    try:
        assert taken.wait(10), "the lock was not taken"
        yield
    finally:
        release.set()
        holder.join(30)


def wait_for_marker(redis_conn, key: str) -> None:
    deadline = time.monotonic() + 30
    while redis_conn.get(key) is None:
        assert time.monotonic() < deadline, "the request set no in-progress marker"
        time.sleep(0.05)


def in_progress(answer) -> bool:
    return answer.status_code == 409 and answer.get_json()["error"]["details"]["reason"] == "in_progress"


def transcriptions(app) -> int:
    with app.app_context():
        return Transcription.select().count()


def create(client, headers: dict[str, str], upload_id: str):
    return client.post("/v1/transcriptions", json={"upload_id": upload_id}, headers=headers)


def test_a_request_running_for_several_leases_stays_in_progress(app, new_org, redis_conn):
    org_id, keyed, upload_id = org_with_upload(app, new_org)
    key = marker_key(app, org_id)
    client = app.test_client()
    with ThreadPoolExecutor(1) as pool:
        with upload_row_locked(app, upload_id):
            first = pool.submit(create, app.test_client(), keyed, upload_id)
            wait_for_marker(redis_conn, key)
            started = time.monotonic()
            while (held := time.monotonic() - started) < 3 * LEASE + LEASE / 4:  # over 3 leases
                ttl = redis_conn.pttl(key)  # present, on the lease (it was 300 s, never renewed)
                assert 0 < ttl <= LEASE * 1000, (held, ttl)
                retry = create(client, keyed, upload_id)
                assert in_progress(retry), (held, retry.status_code, retry.get_json())
                time.sleep(LEASE / 4)
        answer = first.result(timeout=60)
    assert answer.status_code == 202, answer.get_json()
    again = create(client, keyed, upload_id)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true", again.get_json()
    assert again.get_json()["id"] == answer.get_json()["id"]
    assert transcriptions(app) == 1


@contextlib.contextmanager
def gunicorn(app, log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """The test's app (its database, Redis prefix, queue, storage) under gunicorn, one gthread worker,
    with CLIPTEXT_UPLOAD_SLOT_LEASE from this test's environment; in a session of its own."""
    env = {**os.environ, "CLIPTEXT_LOG_FORMAT": "text"}
    with serve(f"api:create_app({app_config(app)!r})", env, log) as started:
        yield started


def send_create(port: int, headers: dict[str, str], upload_id: str) -> socket.socket:
    """POST /v1/transcriptions sent whole on a socket left open (the answer is never read)."""
    body = json.dumps({"upload_id": upload_id}).encode()
    head = f"POST /v1/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head.encode() + body)
    return sock


def test_the_marker_of_a_killed_request_lapses_within_the_lease(app, new_org, redis_conn, tmp_path):
    """A gunicorn worker killed -9 while its request runs (an OOM kill, a lost machine): no process
    renews its marker, which lapses within the lease, not 300 s later; a retry then runs, once."""
    org_id, keyed, upload_id = org_with_upload(app, new_org)
    key = marker_key(app, org_id)
    with gunicorn(app, tmp_path / "gunicorn.log") as (server, port):
        with upload_row_locked(app, upload_id), contextlib.closing(send_create(port, keyed, upload_id)):
            wait_for_marker(redis_conn, key)
            workers = [pid for pid in group_members(server.pid) if pid != server.pid]
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            wait_until_dead(workers)
        deadline = time.monotonic() + LEASE + 5
        while (ttl := redis_conn.pttl(key)) != -2:  # -2: no such key
            assert time.monotonic() < deadline, ttl
            time.sleep(0.1)
        # gunicorn's master has started another worker: the retry runs the request
        url = f"http://127.0.0.1:{port}/v1/transcriptions"
        retry = requests.post(url, json={"upload_id": upload_id}, headers=keyed, timeout=60)
    assert retry.status_code == 202, retry.text
    assert transcriptions(app) == 1
