"""Fixtures for the API tests: a real database per test (SQLite file and PostgreSQL), real Redis.

Every test gets its own database (a fresh SQLite file, or a fresh PostgreSQL database dropped afterwards),
its own Redis key prefix and RQ queue name (all removed afterwards), and its own storage folder.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue

from api import create_app
from api.db import db
from api.queue import family_queues
from api.services.orgs import create_org
from tests.api.postgres_admin import fresh_database

REDIS_URL = os.environ.get("CLIPTEXT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, "ct_api_") as url:
        yield url


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    yield conn
    conn.close()


@pytest.fixture
def test_ns() -> str:
    """A per-test namespace for Redis keys and the RQ queue."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
def make_app(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_conn: redis.Redis, test_ns: str
):
    """Build app instances sharing this test's database and Redis namespace (several = several processes)."""
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPTEXT_SECRET_KEY", secrets.token_urlsafe(32))
    built = []

    def build(**overrides: Any):
        config = {
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "storage_url": f"file://{tmp_path / 'storage'}",
            "REDIS_KEY_PREFIX": f"{test_ns}:",
            "RQ_QUEUE": f"transcriptions-{test_ns}",
            "TESTING": True,
        }
        config.update(overrides)
        app = create_app(config)
        built.append(app)
        return app

    yield build
    if db.obj is not None and not db.is_closed():
        db.close()
    for name in family_queues(redis_conn, f"transcriptions-{test_ns}"):  # its per-organization queues too
        Queue(name, connection=redis_conn).delete(delete_jobs=True)
    for key in redis_conn.scan_iter(match=f"{test_ns}:*"):
        redis_conn.delete(key)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def new_org(app):
    """new_org(plan="free", ...) -> (Organization, auth headers of its owner)."""

    def make(plan: str = "free", email: str | None = None, **limits: Any):
        email = email or f"owner-{secrets.token_hex(4)}@example.com"
        with app.app_context():
            org, key, raw = create_org(f"Org {plan}", email, plan, **limits)
        return org, {"Authorization": f"Bearer {raw}"}

    return make
