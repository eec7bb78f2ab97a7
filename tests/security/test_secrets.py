"""Secrets and what errors reveal: keys only hashed and looked up by hash, no internals in a 500,
security headers on every kind of answer."""

from __future__ import annotations

import hashlib
import inspect
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import peewee as pw
import pytest
from werkzeug.exceptions import InternalServerError

import api.auth
from api.models import ApiKey


def all_text_in_database(database_path: str) -> str:
    """Every value of every column of every table, as one string."""
    conn = sqlite3.connect(database_path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        values = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                values.extend(str(v) for v in row)
        return "\n".join(values)
    finally:
        conn.close()


def test_keys_are_stored_only_as_sha256(app, client, new_org, env):
    _, raw = new_org("pro")
    with app.app_context():
        from api.services.keys import operator_create_key as create_key

        org = ApiKey.select().first().membership.organization
        email = ApiKey.select().first().membership.user.email
        _, second = create_key(org.public_id, email)
        rows = list(ApiKey.select())
    assert client.get("/v1/orgs", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    dump = all_text_in_database(env["DATABASE_URL"].removeprefix("sqlite:///"))
    for key in (raw, second):
        assert key not in dump and key[11:] not in dump and key[-20:] not in dump
    assert {r.key_hash for r in rows} == {hashlib.sha256(k.encode()).hexdigest() for k in (raw, second)}
    assert all(len(r.prefix) <= 11 for r in rows)


def test_key_lookup_is_by_hash(app, client, new_org, caplog):
    """The SQL that authenticates a request carries the key's SHA-256 and never the key itself."""
    _, raw = new_org("pro")
    digest = hashlib.sha256(raw.encode()).hexdigest()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert client.get("/v1/orgs", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
        assert client.get("/v1/orgs", headers={"Authorization": f"Bearer {raw}x"}).status_code == 401
    queries = [record.msg for record in caplog.records if record.name == "peewee"]
    lookups = [q for q in queries if isinstance(q, tuple) and '"api_key"' in q[0] and "key_hash" in q[0]]
    assert lookups and any(digest in map(str, q[1]) for q in lookups)
    assert not any(raw in str(q) for q in queries)
    # code review, kept honest: equality on the indexed hash column, and a constant-time re-check
    source = inspect.getsource(api.auth)
    assert "ApiKey.key_hash == digest" in source and "hmac.compare_digest(" in source


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("cannot open /work/main/data/secret_key (api/auth.py line 3)"),
        KeyError("internal_column_name"),
        pw.IntegrityError("UNIQUE constraint failed: api_key.key_hash"),
        InternalServerError("werkzeug says /srv/app/api/views.py broke"),
        ZeroDivisionError("division by zero"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_500_reveals_no_internals(make_app, new_org, error):
    app = make_app()

    @app.get("/v1/test-only-boom")
    def boom():
        raise error

    app.view_functions["boom"].view_class = type("Public", (), {"public": True})
    response = app.test_client().get("/v1/test-only-boom", headers={"X-Request-Id": "req-77"})
    assert response.status_code == 500
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "INTERNAL" and body["error"]["details"] == {"request_id": "req-77"}
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "/work", "/srv", ".py", type(error).__name__, "key_hash", "internal_column"):
        assert leak not in text, leak


def test_security_headers_on_every_kind_of_answer(app, client, new_org):
    _, raw = new_org("enterprise", custom_rate_limit=2)
    key = {"Authorization": f"Bearer {raw}"}
    answers = {
        "json 200": client.get("/v1/orgs", headers=key),
        "404": client.get("/v1/transcriptions/txn_nope", headers=key),
        "429": client.get("/v1/orgs", headers=key),
        "401": client.get("/v1/orgs"),
        "405": client.patch("/v1/orgs"),
        "unknown path": client.get("/nowhere"),
        "health": client.get("/v1/health"),
        "openapi": client.get("/v1/openapi.json"),
    }
    assert answers["429"].status_code == 429 and answers["json 200"].status_code == 200
    for name, response in answers.items():
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["X-Frame-Options"] == "DENY", name
        assert headers["Referrer-Policy"] == "no-referrer", name
        assert headers["Cache-Control"] == "no-store", name
        assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'", name
    docs = client.get("/v1/docs")
    docs.get_data()
    docs.close()
    assert docs.mimetype == "text/html" and docs.headers["X-Frame-Options"] == "DENY"
    policy = docs.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'unsafe-inline'" not in policy


def test_revoked_key_stops_within_the_cache_ttl(make_app, new_org):
    """A plain UPDATE behind the API's back is seen after auth_cache_seconds; a revocation at once."""
    import time

    from api.models import utcnow
    from api.services.keys import operator_revoke_key

    app = make_app(auth_cache_seconds=0.5)
    client = app.test_client()
    _, raw = new_org("pro")
    key = {"Authorization": f"Bearer {raw}"}
    assert client.get("/v1/orgs", headers=key).status_code == 200
    with app.app_context():
        ApiKey.update(revoked_at=utcnow()).execute()  # as the CLI in another process would
    assert client.get("/v1/orgs", headers=key).status_code == 200  # still cached
    time.sleep(0.6)
    assert client.get("/v1/orgs", headers=key).status_code == 401
    _, other = new_org("pro")
    other_key = {"Authorization": f"Bearer {other}"}
    assert client.get("/v1/orgs", headers=other_key).status_code == 200
    with app.app_context():
        key_id = ApiKey.get(ApiKey.key_hash == hashlib.sha256(other.encode()).hexdigest()).public_id
        assert operator_revoke_key(key_id, force=True)
    assert client.get("/v1/orgs", headers=other_key).status_code == 401  # revoked here: no delay


def revoke_in_another_process(key_id: str) -> None:
    """`flask --app api keys revoke` as an operator runs it: its own process, this test's environment."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", "keys", "revoke", "--force", key_id],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def key_id_of(app, raw: str) -> str:
    with app.app_context():
        return ApiKey.get(ApiKey.key_hash == hashlib.sha256(raw.encode()).hexdigest()).public_id


def test_key_revoked_by_another_process_is_refused_at_once(make_app, new_org):
    """Cached lookups stand only while no key was revoked anywhere: the next request is a 401, also for
    a cached key whose organization is over its rate limit (401, not 429). The org's other key works."""
    from api.services.keys import operator_create_key as create_key

    app = make_app(auth_cache_seconds=3600)  # nothing expires during the test
    client = app.test_client()
    org, raw = new_org("free")  # 10 requests a minute
    with app.app_context():
        _, other = create_key(org.public_id, ApiKey.select().first().membership.user.email)
    key, other_key = ({"Authorization": f"Bearer {k}"} for k in (raw, other))
    assert [client.get("/v1/orgs", headers=key).status_code for _ in range(2)] == [200, 200]
    revoke_in_another_process(key_id_of(app, raw))
    refused = client.get("/v1/orgs", headers=key)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert "RateLimit-Remaining" not in refused.headers
    assert client.get("/v1/orgs", headers=other_key).status_code == 200

    codes = [client.get("/v1/orgs", headers=other_key).status_code for _ in range(7)]
    assert codes[-1] == 429 and set(codes) == {200, 429}  # counted: 2 + 1 refused + 1 + 7 > 10
    revoke_in_another_process(key_id_of(app, other))
    refused = client.get("/v1/orgs", headers=other_key)
    assert refused.status_code == 401 and "Retry-After" not in refused.headers


def test_revoke_says_so_when_redis_cannot_be_told(make_app, new_org):
    """The database change stands; the operator learns that processes may accept the key a while more."""
    app = make_app()
    _, raw = new_org("pro")
    key_id = key_id_of(app, raw)
    unreachable = make_app(redis_url="redis://127.0.0.1:1/0", auth_cache_seconds=5)
    result = unreachable.test_cli_runner().invoke(args=["keys", "revoke", "--force", key_id])
    assert result.exit_code != 0
    assert "revoked in the database" in result.output and "up to 5 s more" in result.output
    assert app.test_client().get("/v1/orgs", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


def test_revocation_seen_after_redis_lost_its_data(make_app, new_org, redis_conn):
    """The generation is random, not a count that a Redis restarted empty could count up to again."""
    from api.services.keys import operator_revoke_key

    app, elsewhere = make_app(auth_cache_seconds=3600), make_app()  # two app instances: two processes
    client = app.test_client()
    _, first = new_org("pro")
    _, second = new_org("pro")
    with elsewhere.app_context():
        assert operator_revoke_key(key_id_of(elsewhere, first), force=True)
    headers = {"Authorization": f"Bearer {second}"}
    assert client.get("/v1/orgs", headers=headers).status_code == 200  # cached under that generation
    redis_conn.flushdb()  # Redis restarted without its data
    with elsewhere.app_context():
        assert operator_revoke_key(key_id_of(elsewhere, second), force=True)
    assert client.get("/v1/orgs", headers=headers).status_code == 401


def test_a_lookup_cached_before_any_revocation_never_matches_a_lost_generation(make_app, new_org, redis_conn):
    """A key cached while Redis held no generation yet, revoked elsewhere, then Redis loses its data:
    the lost generation must not read back as the value the lookup was cached under."""
    from api.services.keys import operator_revoke_key

    redis_conn.flushdb()  # no revocation ever recorded
    app, elsewhere = make_app(auth_cache_seconds=3600), make_app()
    client = app.test_client()
    _, raw = new_org("pro")
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/v1/orgs", headers=headers).status_code == 200  # cached
    with elsewhere.app_context():
        assert operator_revoke_key(key_id_of(elsewhere, raw), force=True)
    redis_conn.flushdb()  # Redis restarted without its data before this process made a request
    assert client.get("/v1/orgs", headers=headers).status_code == 401
    assert client.get("/v1/orgs", headers=headers).status_code == 401  # the stale entry is gone too
