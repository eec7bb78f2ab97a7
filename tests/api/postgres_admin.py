"""Administration of the test PostgreSQL server: one database per test, created and dropped here."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from api.db import db

# the server `make test` makes sure answers (cliptext.local_services)
PG_ADMIN_URL = os.environ.get("CLIPTEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@contextmanager
def fresh_database(kind: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """The URL of an empty database for one test: a SQLite file in `tmp_path`, or a PostgreSQL database
    named `prefix` + random hex, dropped afterwards (the app's connection closed first)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}"
        return
    name = f"{prefix}{secrets.token_hex(6)}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        if db.obj is not None and not db.is_closed():
            db.close()
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
