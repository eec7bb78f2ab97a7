"""The database with a year of data: how long each query of the API and of the workers' sweeps takes.

Seeds (tests/api/scale.py) a throw-away SQLite file, or the fresh PostgreSQL database --database-url
names, with --rows transcriptions over a year in three organizations (70 %; 30 % but none in the last
six months; 0.05 %), then runs each operation through the code that serves it (api.services,
jobs.recovery) and prints, per operation, the median time of --repeat runs and the plan of each SQL
statement it issued (from peewee's query log): a `SCAN`/`Seq Scan` of a big table, or a sort of all of
an organization's rows, is what grows with the table. The database is migrated first (create_app).

    .venv/bin/python bench/data_scale.py --rows 200000
    .venv/bin/python bench/data_scale.py --rows 200000 --database-url postgresql://postgres@127.0.0.1:5432/NAME

Redis: db 4 of --redis-url's server by default (the sweeps enqueue into it; flushed before and after).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import peewee as pw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def operations(state, seeded) -> dict[str, Callable[[], object]]:
    """Each operation as the API or a worker runs it, against the seeded organizations."""
    from api.models import Organization, Transcription, Upload, utcnow
    from api.services import transcriptions as service
    from api.services import uploads
    from jobs.recovery import enqueue_missed_webhooks, recover_abandoned, requeue_orphans
    from jobs.transcript_store import status_of

    big, quiet, small = (Organization.get_by_id(org_id) for org_id in seeded.org_ids)
    ids = [
        public_id
        for (public_id,) in Transcription.select(Transcription.public_id)
        .where(Transcription.organization == big)
        .order_by(Transcription.created_at.desc(), Transcription.id.desc())
        .tuples()
    ]
    deep = ids[len(ids) // 2]  # half a year back
    failed_page_end = service.list_page(big, 20, status="failed").data[-1].public_id
    segmented = ids[100]  # among the newest: it has segments
    settings = state.settings
    queue = state.queue_name
    victims = iter(ids[len(ids) // 3 :])

    def delete_one() -> None:
        service.delete(state, service.get_transcription(big, next(victims)))

    def in_flight() -> tuple:
        count = (pw.fn.COUNT(Upload.id), pw.fn.MIN(Upload.expires_at))  # as uploads._reserve counts
        return uploads._in_flight(big).select(*count).tuples().get()

    return {
        "get one (+ its segments)": lambda: service.segment_items(service.read_transcription(big, segmented)),
        "list, first page (big org)": lambda: service.list_page(big, 20),
        "list, first page (100-row org)": lambda: service.list_page(small, 20),
        "list, first page (org quiet for 6 months)": lambda: service.list_page(quiet, 20),
        "list, cursor half a year back": lambda: service.list_page(big, 20, starting_after=deep),
        "list, status=failed": lambda: service.list_page(big, 20, status="failed"),
        "list, status=failed + cursor": lambda: service.list_page(
            big, 20, starting_after=failed_page_end, status="failed"
        ),
        "list, status=queued": lambda: service.list_page(big, 20, status="queued"),
        "list, status=queued (100-row org)": lambda: service.list_page(small, 20, status="queued"),
        "list, status=failed (org quiet for 6 months)": lambda: service.list_page(quiet, 20, status="failed"),
        "delete one": delete_one,
        "uploads in flight (cap count)": in_flight,
        "sweep: recover_abandoned's query, 50 failed jobs": lambda: list(  # as it reads their statuses
            Transcription.select(Transcription.public_id, Transcription.status)
            .where(Transcription.public_id.in_(ids[:50]))
            .tuples()
        ),
        "sweep: requeue_orphans": lambda: requeue_orphans(state.redis, settings, queue),
        "sweep: enqueue_missed_webhooks": lambda: enqueue_missed_webhooks(state.redis, settings, queue),
        "sweep: recover_abandoned (empty registry)": lambda: recover_abandoned(state.redis, settings, queue),
        "worker: status_of": lambda: status_of(segmented),
        "purge: unused uploads (select)": lambda: list(
            Upload.select(Upload.id).where(uploads._unused(utcnow())).tuples()
        ),
        "purge: expired uploads (select)": lambda: list(
            Upload.select(Upload.id).where(uploads._expired(utcnow())).tuples()
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a SQLite file)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-seed", action="store_true", help="the database is seeded already")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cliptext-scale-") as folder:
        run_bench(args, Path(folder))


def run_bench(args: argparse.Namespace, scratch: Path) -> None:
    from api import create_app
    from api.models import db
    from api.state import state as app_state
    from tests.api.scale import Seeded, plan_of, seed, statements_of

    url = args.database_url or f"sqlite:///{scratch / 'scale.db'}"
    app = create_app(
        {
            "database_url": url,
            "redis_url": args.redis_url,
            "storage_url": f"file://{scratch / 'storage'}",
            "REDIS_KEY_PREFIX": "scale:",
            "RQ_QUEUE": "transcriptions-scale",
            "job_orphan_grace": int(timedelta(minutes=2).total_seconds()),
        }
    )
    logging.getLogger().setLevel(logging.ERROR)  # the sweeps' warnings are expected here
    with app.app_context():
        current = app_state()
        current.redis.flushdb()
        db.connect(reuse_if_open=True)
        started = time.perf_counter()
        if args.no_seed:
            ids = [row[0] for row in db.execute_sql("SELECT id FROM organization ORDER BY id").fetchall()[:3]]
            seeded = Seeded(org_ids=tuple(ids), transcriptions=args.rows)
        else:
            seeded = seed(db.obj, args.rows)
        print(f"{url}: {args.rows} transcriptions, seeded in {time.perf_counter() - started:.1f} s\n")
        for name, run in operations(current, seeded).items():
            statements = statements_of(run)
            ms = median_ms(run, args.repeat)
            print(f"{ms:9.2f} ms  {name}  ({len(statements)} statements)")
            for sql, params in statements:
                found = "; ".join(plan_of(sql, params))
                if found:
                    print(f"             {found[:300]}")
        db.close()
        current.redis.flushdb()
    if hasattr(db.obj, "close_all"):
        db.obj.close_all()


if __name__ == "__main__":
    main()
