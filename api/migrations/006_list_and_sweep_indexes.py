"""Peewee migrations -- 006_list_and_sweep_indexes.py.

What a request or a sweep reads stays what it returns once the tables hold a year of rows:

- an organization's list, newest first (api.services.transcriptions.list_page), whole or of one status,
  cursor or not: (organization_id, created_at, id) and (organization_id, status, created_at, id). With
  only one-column indexes SQLite read and sorted every row of the organization for each page; PostgreSQL
  walked the `created_at` index back past the other organizations' newer rows (all of them, for one
  that stopped using the service). That index goes: the list was its only reader, and PostgreSQL kept
  choosing it over the new one;
- the missed-webhook sweep, run by every worker every minute: (status, completed_at). SQLite, which keeps
  no statistics, chose the `status` index over 003's `completed_at` one and read every completed row;
- the concurrent-upload cap, counted at each upload: (organization_id, status) on upload. SQLite read
  every upload of the organization.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_index("transcription", "organization", "created_at", "id")
    migrator.add_index("transcription", "organization", "status", "created_at", "id")
    migrator.drop_index("transcription", "created_at")
    migrator.add_index("transcription", "status", "completed_at")
    migrator.add_index("upload", "organization", "status")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.drop_index("upload", "organization", "status")
    migrator.drop_index("transcription", "status", "completed_at")
    migrator.add_index("transcription", "created_at")
    migrator.drop_index("transcription", "organization", "status", "created_at", "id")
    migrator.drop_index("transcription", "organization", "created_at", "id")
