"""Peewee migrations -- 003_transcription_completed_at_index.py.

The workers' missed-webhook sweep (jobs.recovery.enqueue_missed_webhooks) looks, every minute, for
transcriptions that ended within the last day: by `completed_at`, which needs an index once the table
holds years of them.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_index("transcription", "completed_at")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.drop_index("transcription", "completed_at")
