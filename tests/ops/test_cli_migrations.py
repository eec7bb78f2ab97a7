"""`flask --app api db upgrade` applies the migrations itself and says which; no other command migrates.

Loading the app used to migrate (create_app's MIGRATE_ON_START) before any command ran, so `db upgrade`
always printed "up to date" (compose's migrate service logged nothing useful) and every command, a
`keys revoke` included, changed the schema on the side. The real `flask` command in a process of its
own, on a fresh SQLite file and a fresh PostgreSQL database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from api.db import make_database
from api.migrations import MIGRATIONS_DIR
from tests.api.postgres_admin import fresh_database

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.py"))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, "ct_cli_") as url:
        yield url


def flask(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPTEXT_", "PROMETHEUS_"))}
    env.update(
        CLIPTEXT_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=database_url,
        REDIS_URL="redis://127.0.0.1:6379/12",
        CLIPTEXT_SECRET_KEY=secrets.token_urlsafe(32),
        CLIPTEXT_LOG_FORMAT="text",
    )
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tables(database_url: str) -> set[str]:
    database = make_database(database_url)
    try:
        with database.connection_context():
            return set(database.get_tables())
    finally:
        if hasattr(database, "close_all"):  # pooled: the test's database is dropped afterwards
            database.close_all()


def test_db_upgrade_lists_what_it_applied(database_url: str, tmp_path: Path) -> None:
    assert MIGRATIONS[:2] == ["001_initial", "002_segment_decoding"]
    first = flask(database_url, tmp_path, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"applied: {', '.join(MIGRATIONS)}"
    again = flask(database_url, tmp_path, "db", "upgrade")
    assert again.returncode == 0 and again.stdout.strip() == "up to date", again.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["orgs", "create", "Acme", "--owner", "a@acme.test"],
        ["keys", "list", "--org", "org_x"],
        ["keys", "revoke", "key_x"],
        ["uploads", "purge-expired"],
        ["dev-key"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_other_commands_refuse_an_unmigrated_database(database_url: str, tmp_path: Path, command) -> None:
    """One line naming what to run, no traceback, and the database left as it was."""
    done = flask(database_url, tmp_path, *command)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "migration(s) to apply" in done.stderr and "flask --app api db upgrade" in done.stderr
    assert tables(database_url) == set()  # not migrated, not even the history table


def test_commands_work_once_migrated(database_url: str, tmp_path: Path) -> None:
    assert flask(database_url, tmp_path, "db", "upgrade").returncode == 0
    created = flask(database_url, tmp_path, "orgs", "create", "Acme", "--owner", "a@acme.test")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("ct_")
    purged = flask(database_url, tmp_path, "uploads", "purge-expired")
    assert purged.returncode == 0 and "purged 0" in purged.stdout, purged.stderr


def test_the_api_still_migrates_on_start(database_url: str, tmp_path: Path, monkeypatch) -> None:
    """Outside the flask CLI (gunicorn, tests, make run) create_app migrates as before."""
    from api import create_app
    from api.db import db

    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPTEXT_SECRET_KEY", secrets.token_urlsafe(32))
    create_app({"database_url": database_url, "redis_url": "redis://127.0.0.1:6379/12"})
    if isinstance(db.obj, pw.Database) and hasattr(db.obj, "close_all"):
        db.obj.close_all()
    assert {"organization", "migratehistory"} <= tables(database_url)
