"""Fixtures for the security tests: the real app on a fresh SQLite file and a dedicated, flushed Redis db.

Redis db 8 (CLIPTEXT_SECURITY_REDIS) is used by these tests only and flushed before and after each test,
so rate-limit counters and locks of one test never leak into the next.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from api import create_app
from api.db import db
from api.services.orgs import create_org
from tests.api.postgres_admin import fresh_database
from tests.redis_db import flushed_redis

REDIS_URL = os.environ.get("CLIPTEXT_SECURITY_REDIS", "redis://127.0.0.1:6379/8")


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    with flushed_redis(REDIS_URL) as conn:
        yield conn


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file; `parametrize("database_url", ["postgres"], indirect=True)` for a PostgreSQL db."""
    with fresh_database(getattr(request, "param", "sqlite"), tmp_path, "ct_sec_") as url:
        yield url


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_conn: redis.Redis, database_url: str
) -> dict[str, str]:
    """The environment every app instance (in this process or a server process) of one test shares."""
    values = {
        "CLIPTEXT_DATA_DIR": str(tmp_path / "data"),
        "CLIPTEXT_SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "CLIPTEXT_OPENAI_WAIT_SECONDS": "1",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def make_app(env: dict[str, str]):
    """Build app instances on this test's database, storage and Redis db."""

    def build(**overrides: Any):
        return create_app({"TESTING": True, **overrides})

    yield build
    if db.obj is not None and not db.is_closed():
        db.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def new_org(app):
    """new_org(plan="free", ...) -> (Organization, raw API key of its owner)."""

    def make(plan: str = "free", **limits: Any):
        with app.app_context():
            org, _, raw = create_org(
                f"Org {plan}", f"owner-{secrets.token_hex(4)}@example.com", plan, **limits
            )
        return org, raw

    return make
