"""Migrations: a fresh database is built by peewee-migrate, and the models never drift from the migrations."""

from __future__ import annotations

import threading

import peewee as pw
import pytest
from peewee_migrate.router import compile_migrations

from api.db import db, make_database
from api.migrations import _migration_lock, pending, router, upgrade
from api.models import ALL_MODELS, Segment
from tests.api.postgres_admin import pg_admin


def test_fresh_database_is_migrated_once(database_url):
    database = make_database(database_url)
    db.initialize(database)
    names = [
        "001_initial",
        "002_segment_decoding",
        "003_transcription_completed_at_index",
        "004_deleted_transcription",
        "005_webhook_secret_rotation",
        "006_list_and_sweep_indexes",
        "007_normalize_member_emails",
    ]
    assert pending(database) == names
    assert upgrade(database) == names
    assert upgrade(database) == []
    with database.connection_context():
        tables = set(database.get_tables())
        assert {m._meta.table_name for m in ALL_MODELS} <= tables
        assert "migratehistory" in tables
        indexed = {tuple(index.columns) for index in database.get_indexes("transcription")}
        assert ("completed_at",) in indexed  # the missed-webhook sweep's filter


def test_pending_waits_for_a_migration_in_progress(database_url):
    """Reading what is pending creates the history table when missing: outside the migration lock it
    raced with a process migrating a fresh database (PostgreSQL: one of them failed)."""
    database = make_database(database_url)
    db.initialize(database)
    migrating = make_database(database_url)  # another process's connection
    found: list[list[str]] = []
    with migrating.connection_context(), _migration_lock(migrating):
        reader = threading.Thread(target=lambda: found.append(pending(database)), daemon=True)
        reader.start()
        reader.join(1.0)
        assert reader.is_alive(), "pending() read the history while a migration held the lock"
    reader.join(30)
    assert found and found[0][0] == "001_initial"


def test_models_match_the_migrations(database_url):
    """Changing api/models.py without `flask --app api db new NAME` fails here."""
    database = make_database(database_url)
    db.initialize(database)
    upgrade(database)
    with database.connection_context():
        assert compile_migrations(router(database).migrator, ALL_MODELS) == ""


def test_segment_index_is_unique(database_url):
    database = make_database(database_url)
    db.initialize(database)
    upgrade(database)
    from api.models import Organization, Transcription

    with database.connection_context():
        org = Organization.create(name="o")
        txn = Transcription.create(organization=org)
        Segment.create(transcription=txn, index=0, start=0, end=1, text="a")
        try:
            with database.atomic():
                Segment.create(transcription=txn, index=0, start=0, end=1, text="b")
            raise AssertionError("duplicate (transcription, index) accepted")
        except pw.IntegrityError:
            pass
        # a foreign key to a missing row is refused on SQLite too (foreign_keys pragma)
        try:
            with database.atomic():
                Segment.create(transcription=999_999, index=0, start=0, end=1, text="c")
            raise AssertionError("dangling foreign key accepted")
        except pw.IntegrityError:
            pass
    database.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_survives_dropped_connections(make_app, database_url):
    """Pooled connections killed by the server: discarded at check-out, or reconnected mid-request."""
    from api.services.orgs import create_org

    name = database_url.rsplit("/", 1)[1]
    kill = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    app = make_app()
    with app.app_context():
        _, _, raw = create_org("o", "o@example.com", "pro")
    headers = {"Authorization": f"Bearer {raw}"}
    client = app.test_client()
    assert client.get("/v1/transcriptions", headers=headers).status_code == 200
    pg_admin(kill)
    assert client.get("/v1/transcriptions", headers=headers).status_code == 200

    db.connect(reuse_if_open=True)  # as a request does; the connection dies between two of its queries
    try:
        assert db.execute_sql("SELECT 1").fetchone() == (1,)
        pg_admin(kill)
        assert db.execute_sql("SELECT 2").fetchone() == (2,)
    finally:
        db.close()
