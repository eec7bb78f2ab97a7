"""p50/p99 latency of GET /v1/transcriptions/{id} under a short local load.

Starts gunicorn (`api:create_app()`) on a free port with a throw-away data folder (SQLite unless
--database-url is given), seeds one completed transcription with segments, then hammers it from threads.

    .venv/bin/python bench/api_latency.py --seconds 10 --threads 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(segments: int) -> tuple[str, str]:
    """One Enterprise org (no practical rate limit) with a completed transcription; returns (key, id)."""
    from api.db import init_db
    from api.models import Segment, Transcription, db
    from api.services.orgs import create_org
    from cliptext.settings import Settings
    from tests.seed import completed_upload

    init_db(Settings.from_env(), migrate=True)
    with db.connection_context():
        org, _, raw = create_org("bench", "bench@example.com", "enterprise", custom_rate_limit=10_000_000)
        upload = completed_upload(org, "bench.mp3", duration=60.0)
        row = Transcription.create(
            organization=org,
            upload=upload,
            status="completed",
            text="word " * 200,
            duration=60.0,
            language="en",
        )
        Segment.insert_many(
            [
                {
                    "transcription": row,
                    "index": i,
                    "start": i * 3.0,
                    "end": i * 3.0 + 3,
                    "text": " hello world",
                }
                for i in range(segments)
            ]
        ).execute()
    db.close()
    return raw, row.public_id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/test",
        help="run on a throw-away PostgreSQL database created (and dropped) through ADMIN_URL",
    )
    args = parser.parse_args()
    args.database_url = None
    if args.postgres:
        args.database_url = create_pg_database(args.postgres)
    try:
        run(args)
    finally:
        if args.postgres:
            pg_admin(
                args.postgres, f'DROP DATABASE IF EXISTS "{args.database_url.rsplit("/", 1)[1]}" WITH (FORCE)'
            )


def pg_admin(admin_url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def create_pg_database(admin_url: str) -> str:
    name = f"ct_bench_{os.getpid()}"
    pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def run(args: argparse.Namespace) -> None:

    data_dir = tempfile.mkdtemp(prefix="cliptext-bench-")
    os.environ["CLIPTEXT_DATA_DIR"] = data_dir
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    key, txn_id = seed(args.segments)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(args.workers),
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "api:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/v1/health", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.2)

        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def worker() -> None:
            nonlocal errors
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {key}"
            mine, bad = [], 0
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                response = session.get(f"{base}/v1/transcriptions/{txn_id}", timeout=10)
                mine.append(time.perf_counter() - start)
                bad += response.status_code != 200
            with lock:
                latencies.extend(mine)
                errors += bad

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(
        f"GET /v1/transcriptions/{{id}} ({args.segments} segments), {args.threads} threads, "
        f"gunicorn {args.workers}x4, {args.seconds:.0f} s, db={'postgresql' if args.postgres else 'sqlite'}"
    )
    print(f"requests={len(latencies)} errors={errors} throughput={len(latencies) / args.seconds:.0f}/s")
    ms = [q[49] * 1000, q[89] * 1000, q[98] * 1000, latencies[-1] * 1000]
    print("p50={:.1f} ms  p90={:.1f} ms  p99={:.1f} ms  max={:.1f} ms".format(*ms))


if __name__ == "__main__":
    main()
