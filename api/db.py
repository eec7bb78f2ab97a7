"""One database handle for the API, the worker and the CLI, initialised from settings.

`db` is a peewee DatabaseProxy: models bind to it at import time and every process points it at the
real database with `init_db(settings)` once at start-up (after RQ forks, too).
"""

from __future__ import annotations

from urllib.parse import urlparse

import peewee as pw
from playhouse import db_url
from playhouse.shortcuts import ReconnectMixin

from cliptext.settings import Settings

db = pw.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "synchronous": "normal",
}


class ReconnectingPostgresqlDatabase(ReconnectMixin, pw.PostgresqlDatabase):
    """Reconnects once when the server dropped the connection (restart, fail-over, idle timeout)."""


def make_database(url: str) -> pw.Database:
    """A peewee database for a `playhouse.db_url` URL.

    SQLite gets WAL + foreign keys + a busy timeout; PostgreSQL reconnects after a dropped connection.
    """
    scheme = urlparse(url).scheme
    if scheme in {"postgres", "postgresql"}:
        return ReconnectingPostgresqlDatabase(**db_url.parse(url))
    if scheme == "sqlite":
        params = db_url.parse(url)
        params.setdefault("pragmas", SQLITE_PRAGMAS)
        params.setdefault("timeout", 10)
        return pw.SqliteDatabase(**params)
    return db_url.connect(url)


def init_db(settings: Settings, *, migrate: bool = False) -> pw.Database:
    """Point the shared proxy at `settings.database_url` (and apply migrations when asked)."""
    database = make_database(settings.database_url)
    if isinstance(database, pw.SqliteDatabase) and database.database != ":memory:":
        from pathlib import Path

        Path(database.database).parent.mkdir(parents=True, exist_ok=True)
    db.initialize(database)
    if migrate:
        from api.migrations import upgrade

        upgrade(database)
    return database
