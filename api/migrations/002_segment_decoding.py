"""Peewee migrations -- 002_segment_decoding.py.

The decoding details of each segment (what OpenAI's verbose_json reports): the window position,
token ids, temperature and the three quality numbers. Nullable: rows written before have none.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields(
        "segment",
        seek=pw.IntegerField(null=True),
        tokens=pw.TextField(null=True),
        temperature=pw.FloatField(null=True),
        avg_logprob=pw.FloatField(null=True),
        compression_ratio=pw.FloatField(null=True),
        no_speech_prob=pw.FloatField(null=True),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields(
        "segment", "seek", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"
    )
