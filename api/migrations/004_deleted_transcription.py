"""Peewee migrations -- 004_deleted_transcription.py.

Where each deleted transcription stood in its organization's list (api.models.DeletedTranscription), so
that `starting_after` naming one deleted between two pages still finds the next page.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class DeletedTranscription(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        organization = pw.ForeignKeyField(
            column_name="organization_id",
            field="id",
            model=migrator.orm["organization"],
            on_delete="CASCADE",
        )
        created_at = pw.DateTimeField()
        row_id = pw.IntegerField()
        deleted_at = pw.DateTimeField(index=True)

        class Meta:
            table_name = "deleted_transcription"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("deleted_transcription")
