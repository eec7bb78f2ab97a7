"""Schema migrations (peewee-migrate): the numbered files in this folder, applied in order at start-up.

New migration after changing api/models.py: `flask --app api db new NAME` (auto-diffs the models).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee as pw
from peewee_migrate import Router

MIGRATIONS_DIR = Path(__file__).resolve().parent


def router(database: pw.Database) -> Router:
    return Router(database, migrate_dir=MIGRATIONS_DIR, ignore=["basemodel"])


_PG_LOCK_ID = 0x636C6970  # "clip": one advisory lock for migrations


@contextmanager
def _migration_lock(database: pw.Database) -> Iterator[None]:
    """Several API processes start at once: only one migrates, the others wait and then find nothing to do."""
    if isinstance(database, pw.PostgresqlDatabase):
        database.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_LOCK_ID,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (_PG_LOCK_ID,))
    elif isinstance(database, pw.SqliteDatabase) and database.database != ":memory:":
        with open(f"{database.database}.migrate-lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def upgrade(database: pw.Database) -> list[str]:
    """Apply every migration not yet recorded in the database; returns the names applied."""
    with database.connection_context(), _migration_lock(database):
        return router(database).run()


def pending(database: pw.Database) -> list[str]:
    """The migrations not yet applied. Under the migration lock: the router creates its history table
    when missing, which on a fresh PostgreSQL database raced with a process migrating it (a CLI command
    run while an API process started: one of them failed on the table's type already existing)."""
    with database.connection_context(), _migration_lock(database):
        return router(database).diff
