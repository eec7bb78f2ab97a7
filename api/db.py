"""One database handle for the API, the worker and the CLI, initialised from settings.

`db` is a peewee DatabaseProxy: models bind to it at import time and every process points it at the
real database with `init_db(settings)` once at start-up (after RQ forks, too).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Any
from urllib.parse import urlparse

import peewee as pw
from playhouse import db_url
from playhouse.pool import (
    MaxConnectionsExceeded,
    PooledDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)
from playhouse.shortcuts import ReconnectMixin

from cliptext.settings import Settings

log = logging.getLogger(__name__)

db = pw.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "synchronous": "normal",
    # a deleted transcript's bytes are overwritten, not left readable in the file's free pages
    "secure_delete": 1,
}

POSTGRES_CONNECT_TIMEOUT = 10  # seconds (libpq's connect_timeout; none by default: wait forever)


class PoolExhausted(pw.OperationalError):
    """No pooled connection came free within the pool's timeout: a database saturated, answered as one
    that cannot answer (503 with Retry-After), not as a bug (peewee's MaxConnectionsExceeded is a
    ValueError: a 500)."""


class ExhaustionIsOperational:
    """A pool whose exhaustion raises PoolExhausted."""

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded as error:
            raise PoolExhausted(str(error)) from error


class CliptextPooledSqliteDatabase(ExhaustionIsOperational, PooledSqliteDatabase):
    """Pooled SQLite connections."""


class ReconnectingPostgresqlDatabase(ReconnectMixin, ExhaustionIsOperational, PooledPostgresqlDatabase):
    """Pooled connections that reconnect once when the server dropped them (restart, fail-over, idle kill).

    Only outside a transaction (ReconnectMixin's rule): a write half done is never silently replayed.
    """

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection already closed"),
        (pw.OperationalError, "ssl connection has been closed"),
        (pw.OperationalError, "could not receive data from server"),
        (pw.InterfaceError, "connection already closed"),
    )


def make_database(url: str) -> pw.Database:
    """A peewee database for a `playhouse.db_url` URL.

    SQLite: WAL, foreign keys, a busy timeout, pooled; PostgreSQL: pooled, reconnects after a drop, gives
    up connecting after POSTGRES_CONNECT_TIMEOUT seconds.
    """
    scheme = urlparse(url).scheme
    if scheme in {"postgres", "postgresql"}:
        params = db_url.parse(url)
        # a host that drops packets (a firewall, a fail-over address not taken over yet) fails a connection
        # after this long, as a database that does not answer, where it held the start and each request
        # for minutes (the kernel's SYN retries); `?connect_timeout=N` in DATABASE_URL sets another
        params.setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT)
        params.setdefault("max_connections", 32)
        params.setdefault("stale_timeout", 300)
        params.setdefault("timeout", 10)  # wait this long for a free pooled connection
        return ReconnectingPostgresqlDatabase(**params)
    if scheme == "sqlite":
        params = db_url.parse(url)
        params.setdefault("pragmas", SQLITE_PRAGMAS)  # busy_timeout: how long a writer waits for the lock
        if params.get("database") == ":memory:":
            return pw.SqliteDatabase(**params)
        # pooled: a request reuses an open connection instead of opening one and setting its pragmas
        params.setdefault("max_connections", 64)
        params.setdefault("stale_timeout", 300)
        params.setdefault("timeout", 10)  # wait this long for a free pooled connection
        return CliptextPooledSqliteDatabase(check_same_thread=False, **params)
    # settings refuse any other scheme at start; a caller that skipped them learns the same here
    raise ValueError(f"DATABASE_URL must be postgresql://… or sqlite:///…, not {scheme or 'schemeless'}")


def init_db(settings: Settings, *, migrate: bool = False) -> pw.Database:
    """Point the shared proxy at `settings.database_url` (and apply migrations when asked)."""
    database = make_database(settings.database_url)
    if isinstance(database, pw.SqliteDatabase) and database.database != ":memory:":
        from pathlib import Path

        Path(database.database).parent.mkdir(parents=True, exist_ok=True)
    previous = db.obj
    db.initialize(database)
    if isinstance(previous, PooledDatabase) and previous is not database:
        # its pooled connections would otherwise be closed only by the garbage collector (Python 3.13
        # warns about each); a process inits once, the tests once per app
        previous.close_all()
    if migrate:
        from api.migrations import upgrade

        upgrade(database)
    return database


def erase_deleted_rows_from_wal(wait: bool = False) -> None:
    """After a delete has committed, on SQLite: copy the write-ahead log into the database file and
    empty it. secure_delete overwrites a deleted row in the database file, but the log kept the pages
    as they had been (the transcript, the file name) until a checkpoint reset it and later writes
    happened to cover them: with the API's pooled connections open, for as long as it ran.

    A reader still open (another request, a backup, Litestream) holds the checkpoint back. A request
    does not wait for it (`wait` False: the busy timeout is 0 while it runs), since SQLite holds every
    other writer for as long as the checkpoint waits: a DELETE took 10 s and stalled the workers' writes
    with it. The purge (`wait`) waits the busy timeout, and finishes what a delete could not."""
    if not isinstance(db.obj, pw.SqliteDatabase):
        return
    try:
        with contextlib.nullcontext() if wait else _no_busy_wait():
            busy, _, _ = db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except pw.OperationalError as error:
        log.warning("deleted rows not yet erased from the SQLite log: %s", error)
        return
    if busy:
        log.warning("deleted rows not yet erased from the SQLite log: readers held the checkpoint back")


@contextlib.contextmanager
def _no_busy_wait() -> Iterator[None]:
    """This connection's busy timeout at 0 inside the block, then back to what it was."""
    (timeout,) = db.execute_sql("PRAGMA busy_timeout").fetchone()
    db.execute_sql("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        db.execute_sql(f"PRAGMA busy_timeout = {int(timeout)}")


def write_transaction():
    """A transaction that reads, then writes: BEGIN IMMEDIATE on SQLite.

    A deferred SQLite transaction that read first cannot wait for the write lock when another
    connection holds it: it fails at once with "database is locked", busy timeout or not.
    """
    if isinstance(db.obj, pw.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


def locked(query: pw.Select) -> pw.Select:
    """`query` taking row locks (SELECT … FOR UPDATE) until the transaction ends, on PostgreSQL. On
    SQLite a write_transaction already holds the database's one write lock: nothing to add."""
    return query if isinstance(db.obj, pw.SqliteDatabase) else query.for_update()


def hold_until_commit(namespace: int, key: int) -> None:
    """Wait for, then hold until the transaction ends, PostgreSQL's advisory lock (namespace, key): for a
    count-then-insert that no row lock covers (an organization's uploads under its cap). On SQLite a
    write_transaction already holds the database's one write lock: nothing to take."""
    if isinstance(db.obj, pw.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)", (namespace, key))


_PREPARED: dict[tuple[type, Hashable], tuple[str, tuple[str, ...]]] = {}


def prepared(
    key: Hashable, build: Callable[[], pw.Query], names: dict[Any, str], **values: Any
) -> tuple[str, tuple[Any, ...]]:
    """The SQL of the query `build()` makes and its parameters: `values`, bound by name.

    Compiled once per `key` and database class (dialect): peewee takes longer to compile a query than
    SQLite takes to run a small one. `build` writes a sentinel value where each parameter goes (`names`
    maps each sentinel to its name; pick values no query would hold: -1 for an id, "?name" for text);
    each parameter is then taken from `values` by that name, whatever order the dialect puts them in.
    A parameter that is not a sentinel is refused, so a constant added to the query later cannot be
    silently swapped for another value.
    """
    cache_key = (type(db.obj), key)
    found = _PREPARED.get(cache_key)
    if found is None:
        sql, params = build().sql()
        try:
            order = tuple(names[param] for param in params)
        except (KeyError, TypeError):
            raise RuntimeError(f"{key}: parameters {params} are not all sentinels of {names}") from None
        found = _PREPARED.setdefault(cache_key, (sql, order))
    sql, order = found
    return sql, tuple(values[name] for name in order)
