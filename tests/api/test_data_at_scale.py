"""With a year of rows in the tables, a request or a sweep reads what it answers with, not the table.

The database is asked (EXPLAIN) how it runs each statement the code issued for a real request (or a real
sweep), on tests/api/scale.py's year of data: SQLite without statistics, as Cliptext leaves it, and
PostgreSQL analyzed, as autovacuum leaves it. bench/data_scale.py gives the times at 200,000 rows.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import flask
import peewee as pw
import pytest
import redis

from api import create_app
from api.auth import issue_key
from api.db import db
from api.migrations import router, upgrade
from api.models import Membership, Role, User
from jobs.recovery import enqueue_missed_webhooks
from tests.api.postgres_admin import fresh_database
from tests.api.scale import Seeded, plan_of, seed, statements_of

REDIS_URL = os.environ.get("CLIPTEXT_TEST_REDIS", "redis://127.0.0.1:6379/0")  # as tests/api/conftest.py
# enough for PostgreSQL's planner to prefer an index for a page over reading the organization's rows
ROWS = 20_000
LIST = "transcription_organization_id_created_at_id"
LIST_OF_STATUS = "transcription_organization_id_status_created_at_id"


@dataclass(frozen=True)
class Year:
    app: flask.Flask
    database: pw.Database
    seeded: Seeded
    headers: dict[str, dict[str, str]]  # "big", "quiet": an owner's key of that organization


def _owner_headers(org_id: int) -> dict[str, str]:
    user = User.create(email=f"owner-{org_id}-{secrets.token_hex(3)}@example.com")
    _, raw = issue_key(Membership.create(organization=org_id, user=user, role=Role.OWNER))
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def year(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Year]:
    """One seeded database per backend for the module (seeding takes seconds), an app serving it."""
    folder = tmp_path_factory.mktemp("year")
    namespace = f"t{secrets.token_hex(5)}"
    with fresh_database(request.param, folder, "ct_scale_") as url, pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPTEXT_DATA_DIR", str(folder / "data"))
        env.setenv("CLIPTEXT_SECRET_KEY", secrets.token_urlsafe(32))
        app = create_app(
            {
                "database_url": url,
                "redis_url": REDIS_URL,
                "storage_url": f"file://{folder / 'storage'}",
                "REDIS_KEY_PREFIX": f"{namespace}:",
                "RQ_QUEUE": f"transcriptions-{namespace}",
                "TESTING": True,
            }
        )
        database = db.obj
        with database.connection_context():
            seeded = seed(database, ROWS, missed_webhooks=0)  # 0: the sweep finds none, Redis stays clean
            headers = dict(zip(("big", "quiet"), map(_owner_headers, seeded.org_ids[:2]), strict=True))
        yield Year(app, database, seeded, headers)
        database.close_all()
        connection = redis.Redis.from_url(REDIS_URL)
        for key in connection.scan_iter(match=f"*{namespace}:*"):  # the rate limiter's keys too
            connection.delete(key)
        connection.close()


@pytest.fixture
def served(year: Year) -> Iterator[Year]:
    db.initialize(year.database)  # the proxy is the app's again (another module's test may have moved it)
    yield year
    if not db.is_closed():
        db.close()


def _plans(run) -> list[tuple[str, list[str]]]:
    """Each statement `run()` issued, with how the database runs it."""
    return [(sql, plan_of(sql, params)) for sql, params in statements_of(run)]


def _search_conditions(plan: list[str]) -> list[str]:
    """What each index lookup of a plan is bounded by: SQLite's `SEARCH … (a=? AND b>?)`, PostgreSQL's
    `Index Cond: (…)`."""
    sqlite = [m.group(1) for line in plan if (m := re.match(r"SEARCH .* USING .*INDEX \S+ \((.*)\)", line))]
    return sqlite + [line.removeprefix("Index Cond: ") for line in plan if line.startswith("Index Cond:")]


def _reads_whole_tables(plan: list[str]) -> list[str]:
    """The steps that read a table from end to end, or sort what they read (more rows than a page)."""
    return [
        line
        for line in plan
        if re.match(r"SCAN (t\d|transcription|upload)\b", line)
        or "USE TEMP B-TREE FOR ORDER BY" in line
        or re.search(r"Seq Scan on (transcription|upload)\b", line)
        or re.match(r"(->\s+)?(Incremental )?Sort\b", line)
    ]


def _uses(plan: list[str], index: str) -> bool:
    return any(f"INDEX {index} " in line or f"using {index} on" in line for line in plan)


def _page_statement(plans: list[tuple[str, list[str]]]) -> list[str]:
    pages = [plan for sql, plan in plans if 'FROM "transcription"' in sql and "ORDER BY" in sql]
    assert len(pages) == 1, [sql for sql, _ in plans]
    return pages[0]


@pytest.mark.parametrize("org", ["big", "quiet"])
@pytest.mark.parametrize("status", [None, "failed"])
def test_a_list_page_reads_its_own_rows_only(served: Year, org: str, status: str | None):
    """First page and the next, whole list and one status, for the organization with most of the rows
    (SQLite read and sorted all of them for each page) and one whose rows are all half a year old
    (PostgreSQL walked `created_at` back past the others' newer rows): each page is read in order from
    the index, nothing sorted. (An organization with a handful of rows may well be read whole.)"""
    client = served.app.test_client()
    query = {"limit": 20} | ({"status": status} if status else {})
    first = client.get("/v1/transcriptions", query_string=query, headers=served.headers[org])
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["data"], "the seed gave this organization no such rows"
    after = first.get_json()["data"][-1]["id"]
    for page_query in (query, query | {"starting_after": after}):
        plans = _plans(
            lambda q=page_query: client.get("/v1/transcriptions", query_string=q, headers=served.headers[org])
        )
        page = _page_statement(plans)
        assert _uses(page, LIST_OF_STATUS if status else LIST), page
        for sql, plan in plans:
            assert not _reads_whole_tables(plan), (sql, plan)


def test_the_upload_cap_counts_the_uploads_in_flight_only(served: Year):
    """A presigned upload counts the organization's pending and uploaded ones: SQLite read every upload
    the organization ever made (a year of them) to count the few in flight."""
    client = served.app.test_client()
    body = {"filename": "talk.mp3", "content_type": "audio/mpeg", "size": 1000}
    plans = _plans(lambda: client.post("/v1/uploads/presigned", json=body, headers=served.headers["big"]))
    counts = [plan for sql, plan in plans if sql.startswith("SELECT COUNT(") and 'FROM "upload"' in sql]
    assert len(counts) == 1, [sql for sql, _ in plans]
    assert any("status" in bound for bound in _search_conditions(counts[0])), counts[0]
    for sql, plan in plans:
        assert not _reads_whole_tables(plan), (sql, plan)


def test_the_missed_webhook_sweep_reads_the_last_day_only(served: Year, redis_conn: redis.Redis):
    """Every worker runs it every minute: SQLite, without statistics, took the `status` index and read
    every completed transcription of the year instead of the day's by `completed_at`."""
    settings = served.app.extensions["cliptext"].settings
    plans = _plans(lambda: enqueue_missed_webhooks(redis_conn, settings, "unused"))
    assert len(plans) == 1, plans
    sql, plan = plans[0]
    assert any("completed_at" in bound for bound in _search_conditions(plan)), plan
    assert not _reads_whole_tables(plan), plan


def test_the_indexes_come_with_an_upgrade_of_a_database_in_use(database_url: str):
    """`flask --app api db upgrade` (api.migrations.upgrade) on a database holding rows at 005."""
    from api.db import make_database

    database = make_database(database_url)
    db.initialize(database)
    with database.connection_context():
        router(database).run("005_webhook_secret_rotation")
        seed(database, 500, missed_webhooks=0)
    assert upgrade(database)[0] == "006_list_and_sweep_indexes"
    with database.connection_context():
        transcription = {tuple(index.columns) for index in database.get_indexes("transcription")}
        upload = {tuple(index.columns) for index in database.get_indexes("upload")}
        assert ("organization_id", "created_at", "id") in transcription
        assert ("organization_id", "status", "created_at", "id") in transcription
        assert ("status", "completed_at") in transcription
        assert ("created_at",) not in transcription  # PostgreSQL chose it for the list, against the data
        assert ("organization_id", "status") in upload
        assert database.execute_sql("SELECT COUNT(*) FROM transcription").fetchone() == (500,)
    database.close()
