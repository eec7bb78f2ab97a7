"""Schema migrations (peewee-migrate): the numbered files in this folder, applied in order at start-up.

New migration after changing api/models.py: `flask --app api db new NAME` (auto-diffs the models).
"""

from __future__ import annotations

from pathlib import Path

import peewee as pw
from peewee_migrate import Router

MIGRATIONS_DIR = Path(__file__).resolve().parent


def router(database: pw.Database) -> Router:
    return Router(database, migrate_dir=MIGRATIONS_DIR, ignore=["basemodel"])


def upgrade(database: pw.Database) -> list[str]:
    """Apply every migration not yet recorded in the database; returns the names applied."""
    with database.connection_context():
        return router(database).run()


def pending(database: pw.Database) -> list[str]:
    with database.connection_context():
        return router(database).diff
