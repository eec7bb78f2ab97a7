"""A year of data, and the plans of the statements the code runs on it.

`seed` writes straight into the tables (no API, no peewee models): organizations of very different sizes,
their uploads and transcriptions (mostly completed, some failed or canceled, the newest still queued or
processing), segments for the newest, webhook deliveries, a week of deletes. `statements_of` records
the SQL a call issues (peewee's query log), `plan_of` asks the database how it runs one.

Used by tests/api/test_data_at_scale.py and bench/data_scale.py (200,000 transcriptions).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import peewee as pw

from api.models import db, utcnow

YEAR = timedelta(days=365)
# each organization's share of the transcriptions and the part of the year it was active in: a big one all
# year, a middling one that went quiet half a year ago (its rows are all behind the big one's newest),
# and one with a handful
ORGS = ((0.70, 1.0), (0.2995, 0.5), (0.0005, 1.0))
QUEUED, PROCESSING = 30, 8  # the newest rows: what the workers have not finished
SEGMENTED = 0.10  # the newest tenth keep 10 segments each
DELETES_PER_WEEK = 2000
_TEXT = "a sentence of a transcript, as long as a short clip gives. " * 5
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

_UPLOAD_COLUMNS = (
    *("id", "public_id", "organization_id", "filename", "content_type", "declared_size", "received_size"),
    *("storage_key", "status", "duration", "created_at", "expires_at", "completed_at"),
)
_TRANSCRIPTION_COLUMNS = (
    *("id", "public_id", "organization_id", "upload_id", "status", "text", "duration", "language"),
    *("options", "webhook_url", "created_at", "started_at", "completed_at", "error_code"),
)


@dataclass(frozen=True)
class Seeded:
    org_ids: tuple[int, ...]  # as in ORGS: the big one, the quiet one, the small one
    transcriptions: int


@dataclass
class _Rows:
    uploads: list[tuple] = field(default_factory=list)
    transcriptions: list[tuple] = field(default_factory=list)
    segments: list[tuple] = field(default_factory=list)
    deliveries: list[tuple] = field(default_factory=list)


def _weights(at: float) -> list[float]:
    """How likely each organization is to own the row made at `at` (0 = a year ago, 1 = now)."""
    return [share / until if at < until or until == 1.0 else 0.0 for share, until in ORGS]


def _public_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_" + "".join(rng.choices(_ALPHABET, k=22))


def _stamper(database: pw.Database) -> Callable[[datetime | None], datetime | str | None]:
    """SQLite gets peewee's text form (sqlite3's own datetime adapter is deprecated: a warning)."""
    if isinstance(database, pw.SqliteDatabase):
        return lambda value: None if value is None else str(value)
    return lambda value: value


def _insert(database: pw.Database, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if not rows:
        return
    names = ", ".join(f'"{name}"' for name in columns)
    cursor = database.cursor()
    if isinstance(database, pw.PostgresqlDatabase):
        from psycopg2.extras import execute_values

        execute_values(cursor, f'INSERT INTO "{table}" ({names}) VALUES %s', rows, page_size=5000)
    else:
        marks = ", ".join("?" for _ in columns)
        cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)


def _next_id(database: pw.Database, table: str) -> int:
    """The id the next row of `table` gets (ids are given explicitly, to link rows without reading)."""
    return database.execute_sql(f'SELECT COALESCE(MAX(id), 0) + 1 FROM "{table}"').fetchone()[0]


def _status(rng: random.Random, newest: int) -> str:
    if newest <= QUEUED:
        return "queued"
    if newest <= QUEUED + PROCESSING:
        return "processing"
    return rng.choices(("completed", "failed", "canceled"), (0.975, 0.02, 0.005))[0]


def _year_of_rows(
    rng: random.Random, database: pw.Database, org_ids: list[int], count: int, missed_webhooks: int
) -> _Rows:
    """One upload and one transcription every YEAR / count, oldest first (ids follow created_at)."""
    stamp = _stamper(database)
    upload_id, txn_id = _next_id(database, "upload"), _next_id(database, "transcription")
    start = utcnow() - YEAR
    rows = _Rows()
    for i in range(count):
        org_id = rng.choices(org_ids, _weights(i / count))[0]
        created = start + YEAR / count * i
        newest = count - i
        status = _status(rng, newest)
        started = created + timedelta(seconds=5) if status != "queued" else None
        finished = started is not None and status != "processing"
        completed = created + timedelta(seconds=rng.randint(30, 300)) if finished else None
        missed = QUEUED + PROCESSING < newest <= QUEUED + PROCESSING + missed_webhooks
        webhook = "https://hooks.example.com/cliptext" if missed or rng.random() < 0.3 else None
        rows.uploads.append(
            (upload_id + i, _public_id(rng, "upl"), org_id, "clip.mp3", "audio/mpeg", 10**6, 10**6)
            + (f"uploads/{org_id}/{upload_id + i}", "completed", 60.0, stamp(created - timedelta(seconds=10)))
            + (stamp(created + timedelta(hours=1)), stamp(created - timedelta(seconds=2)))
        )
        options = '{"language":"en","prompt":null,"word_timestamps":false}'
        rows.transcriptions.append(
            (txn_id + i, _public_id(rng, "txn"), org_id, upload_id + i, status)
            + (_TEXT if status == "completed" else None, 60.0, "en", options, webhook, stamp(created))
            + (stamp(started), stamp(completed), "internal" if status == "failed" else None)
        )
        if webhook and completed and not missed:
            rows.deliveries.append((txn_id + i, 1, 200, stamp(completed)))
        if status == "completed" and newest <= count * SEGMENTED:
            rows.segments.extend((txn_id + i, k, k * 6.0, k * 6.0 + 6.0, "A sentence.") for k in range(10))
    return rows


def _week_of_deletes(
    rng: random.Random, database: pw.Database, org_ids: list[int], count: int
) -> list[tuple]:
    stamp = _stamper(database)
    first = _next_id(database, "transcription")
    now = utcnow()
    return [
        (_public_id(rng, "txn"), rng.choices(org_ids, _weights(1.0))[0], stamp(now - timedelta(days=30)))
        + (first + k, stamp(now - timedelta(days=7) * (k / count)))
        for k in range(count)
    ]


def seed(
    database: pw.Database, transcriptions: int, missed_webhooks: int = 5, seed_value: int = 60
) -> Seeded:
    """Insert the rows (into a migrated schema, in one transaction) and, on PostgreSQL, ANALYZE as
    autovacuum would soon after. SQLite is left without statistics: nothing in Cliptext runs ANALYZE.

    The newest `missed_webhooks` finished transcriptions have a webhook URL and no delivery, for the
    missed-webhook sweep to find (it enqueues them: 0 leaves Redis alone)."""
    rng = random.Random(seed_value)
    stamp = _stamper(database)
    with database.atomic():
        org_ids = []
        for n in range(len(ORGS)):
            org_id = _next_id(database, "organization")
            organization = (
                org_id,
                _public_id(rng, "org"),
                f"scale {n}",
                "pro",
                "s" * 43,
                stamp(utcnow() - YEAR),
            )
            _insert(
                database,
                "organization",
                ("id", "public_id", "name", "plan", "webhook_secret", "created_at"),
                [organization],
            )
            org_ids.append(org_id)
        rows = _year_of_rows(rng, database, org_ids, transcriptions, missed_webhooks)
        _insert(database, "upload", _UPLOAD_COLUMNS, rows.uploads)
        _insert(database, "transcription", _TRANSCRIPTION_COLUMNS, rows.transcriptions)
        _insert(database, "segment", ("transcription_id", "index", "start", "end", "text"), rows.segments)
        _insert(
            database,
            "webhook_delivery",
            ("transcription_id", "attempt", "status_code", "at"),
            rows.deliveries,
        )
        deletes = _week_of_deletes(
            rng, database, org_ids, max(1, min(DELETES_PER_WEEK, transcriptions // 100))
        )
        _insert(
            database,
            "deleted_transcription",
            ("public_id", "organization_id", "created_at", "row_id", "deleted_at"),
            deletes,
        )
    if isinstance(database, pw.PostgresqlDatabase):
        for table in ("organization", "upload", "transcription"):  # the next insert's id follows ours
            database.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            )
        database.execute_sql("ANALYZE")
    return Seeded(org_ids=tuple(org_ids), transcriptions=transcriptions)


class _QueryLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[str, tuple]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:  # peewee logs (sql, params)
            sql, params = record.msg
            self.statements.append((sql, tuple(params or ())))


def statements_of(run: Callable[[], object]) -> list[tuple[str, tuple]]:
    """The (sql, params) of every statement `run()` issues, as the code builds them."""
    logger = logging.getLogger("peewee")
    handler, level, propagate = _QueryLog(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # recorded here, not written to the app's log
    try:
        run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return handler.statements


_NOT_PLANNED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SELECT PG_")


def plan_of(sql: str, params: tuple) -> list[str]:
    """How the database runs one statement, a line per step: EXPLAIN QUERY PLAN on SQLite, EXPLAIN on
    PostgreSQL (never ANALYZE: a DELETE is planned, not run). Empty for transaction control."""
    if sql.lstrip().upper().startswith(_NOT_PLANNED):
        return []
    if isinstance(db.obj, pw.SqliteDatabase):
        return [row[-1] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
    return [row[0].strip() for row in db.execute_sql("EXPLAIN (COSTS OFF) " + sql, params).fetchall()]
