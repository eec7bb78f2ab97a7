"""Peewee migrations -- 005_webhook_secret_rotation.py.

Rotating an organization's webhook secret keeps the one it replaces, and when, so that deliveries are
signed with both for a fixed overlap (api.services.orgs.WEBHOOK_SECRET_OVERLAP) while the receiver
switches. Nullable: an organization never rotated has neither.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields(
        "organization",
        webhook_secret_previous=pw.CharField(max_length=100, null=True),
        webhook_secret_rotated_at=pw.DateTimeField(null=True),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("organization", "webhook_secret_previous", "webhook_secret_rotated_at")
