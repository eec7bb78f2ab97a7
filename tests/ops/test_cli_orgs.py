"""`flask --app api orgs create` refuses what would break the organization, before writing anything.

Negative or zero custom limits were stored and every request of the organization then failed with 500,
a --rate-limit on free/pro was silently dropped, an empty name or owner was accepted, and a name over
the column's 200 characters was a raw peewee DataError traceback on PostgreSQL. The rules are the
service's (api.services.orgs.create_org); the CLI maps them to its options. Real app, real database
(a SQLite file and a PostgreSQL database of the test's own), Flask's CLI runner.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api import create_app
from api.db import db
from api.models import Organization, User
from api.services import orgs as org_service
from tests.api.postgres_admin import fresh_database

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPTEXT_SECRET_KEY", secrets.token_urlsafe(32))
    prefix = f"t{secrets.token_hex(5)}:"
    with fresh_database(request.param, tmp_path, "ct_cli_") as url:
        yield create_app(
            {
                "database_url": url,
                "redis_url": REDIS_URL,
                "storage_url": f"file://{tmp_path / 'storage'}",
                "REDIS_KEY_PREFIX": prefix,
                "TESTING": True,
            }
        )
        if db.obj is not None and not db.is_closed():
            db.close()
    conn = redis.Redis.from_url(REDIS_URL)
    for key in conn.scan_iter(match=f"*{prefix}*"):  # the auth generation, flask-limiter's counters
        conn.delete(key)
    conn.close()


def count(app) -> tuple[int, int]:
    with app.app_context(), db.connection_context():
        return Organization.select().count(), User.select().count()


REFUSED = [
    (["Neg", "--plan", "enterprise", "--owner", "n@b.test", "--rate-limit", "-5"], "'--rate-limit'"),
    (["Zero", "--plan", "enterprise", "--owner", "n@b.test", "--rate-limit", "0"], "'--rate-limit'"),
    (
        ["Neg", "--plan", "enterprise", "--owner", "n@b.test", "--concurrent-uploads", "-1"],
        "'--concurrent-uploads'",
    ),
    (
        ["Zero", "--plan", "enterprise", "--owner", "n@b.test", "--concurrent-uploads", "0"],
        "'--concurrent-uploads'",
    ),
    (["Huge", "--plan", "enterprise", "--owner", "n@b.test", "--rate-limit", str(2**31)], "'--rate-limit'"),
    (["Big", "--plan", "free", "--owner", "a@b.test", "--rate-limit", "1000"], "enterprise plan only"),
    (["Big", "--plan", "pro", "--owner", "a@b.test", "--concurrent-uploads", "9"], "enterprise plan only"),
    (["", "--owner", "a@b.test"], "NAME: must not be empty"),
    (["   ", "--owner", "a@b.test"], "NAME: must not be empty"),
    (["A" * 201, "--owner", "a@b.test"], "at most 200 characters"),
    (["Acme", "--owner", ""], "'--owner': must not be empty"),
    (["Acme", "--owner", "not-an-email"], "not an email address"),
    (["Acme", "--owner", "a" * 320 + "@b.test"], "at most 320 characters"),
]


@pytest.mark.parametrize(("args", "says"), REFUSED, ids=[f"case{i}" for i in range(len(REFUSED))])
def test_orgs_create_refuses(app, args: list[str], says: str) -> None:
    result = app.test_cli_runner().invoke(args=["orgs", "create", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # click's usage error, not a database error
    assert count(app) == (0, 0)  # nothing written, not even the owner


def test_orgs_create_takes_enterprise_limits_and_a_200_character_name(app) -> None:
    runner = app.test_cli_runner()
    name = "N" * 200
    args = ["orgs", "create", f"  {name}  ", "--plan", "enterprise", "--owner", " Boss@Acme.test "]
    result = runner.invoke(args=[*args, "--rate-limit", "1", "--concurrent-uploads", "3"])
    assert result.exit_code == 0, result.output
    raw = result.stdout.strip().splitlines()[-1]
    client = app.test_client()
    orgs = client.get("/v1/orgs", headers={"Authorization": f"Bearer {raw}"})
    assert orgs.status_code == 200, orgs.get_json()
    (org,) = orgs.get_json()["data"]
    assert org["name"] == name and org["plan"] == "enterprise"
    assert (org["limits"]["requests_per_minute"], org["limits"]["concurrent_uploads"]) == (1, 3)
    limited = client.get("/v1/orgs", headers={"Authorization": f"Bearer {raw}"})
    assert limited.status_code == 429  # the custom limit of 1 per minute, applied


def test_the_rules_are_the_services(app) -> None:
    """Any caller of create_org gets them, not only the CLI."""
    with app.app_context(), db.connection_context():
        with pytest.raises(org_service.InvalidOrg) as refused:
            org_service.create_org("Acme", "a@b.test", "pro", custom_rate_limit=100)
        assert refused.value.field == "custom_rate_limit"
        with pytest.raises(org_service.InvalidOrg) as refused:
            org_service.create_org("Acme", "a@b.test", "enterprise", custom_concurrent_uploads=-1)
        assert refused.value.field == "custom_concurrent_uploads"
        with pytest.raises(org_service.InvalidOrg):
            org_service.create_org("x" * 201, "a@b.test")
    assert count(app) == (0, 0)
