"""Migrations: a fresh database is built by peewee-migrate, and the models never drift from the migrations."""

from __future__ import annotations

import peewee as pw
from peewee_migrate.router import compile_migrations

from api.db import db, make_database
from api.migrations import pending, router, upgrade
from api.models import ALL_MODELS, Segment


def test_fresh_database_is_migrated_once(database_url):
    database = make_database(database_url)
    db.initialize(database)
    assert pending(database) == ["001_initial"]
    assert upgrade(database) == ["001_initial"]
    assert upgrade(database) == []
    with database.connection_context():
        tables = set(database.get_tables())
        assert {m._meta.table_name for m in ALL_MODELS} <= tables
        assert "migratehistory" in tables


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
