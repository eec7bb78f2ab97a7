"""Load test of the API under gunicorn, against a bare Flask endpoint under the same gunicorn settings.

Scenarios: GET one transcription (20 segments), list (20 per page), create (JSON with an upload id), and
the bare endpoint (bench/bare_app.py). Each is run two ways with plain threads, one keep-alive connection
per client (http.client: the lightest client in the standard library, so the client steals less CPU):
  - saturated: every client sends its next request as soon as the last answer arrives -> throughput;
  - paced: the clients together offer --rate requests/s at random phases -> latency at a realistic load.
A throw-away data folder, SQLite (or --database-url) and Redis db 9 (flushed before and after).

    .venv/bin/python bench/load.py --clients 100 --seconds 10 --workers 2 --threads 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Result:
    name: str
    mode: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(listed: int, segments: int) -> dict[str, str]:
    """An Enterprise org (no practical rate limit), `listed` completed transcriptions, a completed upload."""
    from api.db import init_db
    from api.models import Segment, Transcription, Upload, db, utcnow
    from api.services.orgs import create_org
    from cliptext.settings import Settings

    init_db(Settings.from_env(), migrate=True)
    with db.connection_context():
        org, _, raw = create_org("bench", "bench@example.com", "enterprise", custom_rate_limit=100_000_000)
        upload = Upload.create(
            organization=org,
            filename="bench.mp3",
            content_type="audio/mpeg",
            declared_size=1,
            storage_key=f"uploads/{org.public_id}/bench",
            status="completed",
            expires_at=utcnow(),
            completed_at=utcnow(),
            duration=60.0,
        )
        rows = [
            Transcription.create(
                organization=org, upload=upload, status="completed", text="word " * 200, duration=60.0
            )
            for _ in range(listed)
        ]
        Segment.insert_many(
            [
                {"transcription": rows[0], "index": i, "start": i * 3.0, "end": i * 3.0 + 3, "text": " hello"}
                for i in range(segments)
            ]
        ).execute()
    db.close()
    return {"key": raw, "transcription": rows[0].public_id, "upload": upload.public_id}


def start_gunicorn(app_spec: str, args: argparse.Namespace, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
        "--worker-class", "gthread", "--threads", str(args.threads), "--keep-alive", "10",
        "--log-level", "warning", *extra, app_spec,
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 90
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{app_spec} did not start") from None
            time.sleep(0.2)


def run_clients(
    port: int, name: str, request: tuple[str, str, bytes | None, dict[str, str]], args: argparse.Namespace,
    paced: bool,
) -> Result:  # fmt: skip
    method, path, body, headers = request
    expected = 202 if method == "POST" else 200
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    interval = args.clients / args.rate if paced else 0.0
    start_barrier = threading.Barrier(args.clients + 1)
    stop_at = 0.0

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], 0
        start_barrier.wait()
        next_at = time.monotonic() + random.random() * interval
        while True:
            if paced:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
            if time.monotonic() >= stop_at:
                break
            began = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == expected
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            mine.append(time.perf_counter() - began)
            bad += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    stop_at = time.monotonic() + args.seconds
    start_barrier.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return Result(
        name, "paced" if paced else "saturated", len(latencies), errors, elapsed, pct(0.5), pct(0.99)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario and mode")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s offered in the paced mode")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (both servers)")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in the throw-away data folder")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--only", nargs="*", help="scenario names to run (bare, get, list, create)")
    args = parser.parse_args()

    import redis

    data_dir = tempfile.mkdtemp(prefix="cliptext-load-")
    os.environ.update(
        {"CLIPTEXT_DATA_DIR": data_dir, "REDIS_URL": args.redis_url, "CLIPTEXT_LOG_LEVEL": "WARNING"}
    )
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    store = redis.Redis.from_url(args.redis_url)
    store.flushdb()
    ids = seed(listed=30, segments=args.segments)
    auth = {"Authorization": f"Bearer {ids['key']}"}
    scenarios = {
        "bare": ("bare", ("GET", "/ping", None, {})),
        "get": ("api", ("GET", f"/v1/transcriptions/{ids['transcription']}", None, auth)),
        "list": ("api", ("GET", "/v1/transcriptions?limit=20", None, auth)),
        "create": (
            "api",
            (
                "POST",
                "/v1/transcriptions",
                json.dumps({"upload_id": ids["upload"]}).encode(),
                {**auth, "Content-Type": "application/json"},
            ),
        ),
    }
    chosen = [name for name in scenarios if not args.only or name in args.only]
    servers = {}
    results: list[Result] = []
    try:
        servers["bare"] = start_gunicorn("bare_app:app", args, ["--pythonpath", str(ROOT / "bench")])
        servers["api"] = start_gunicorn("api:create_app()", args, [])
        for name in chosen:
            server, request = scenarios[name]
            for paced in (False, True):
                results.append(run_clients(servers[server][1], name, request, args, paced))
                print(f"  done {name} {'paced' if paced else 'saturated'}", file=sys.stderr, flush=True)
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
        for server, _ in servers.values():
            server.wait(timeout=30)
        store.flushdb()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"\n{args.clients} clients, gunicorn {args.workers} workers x {args.threads} threads (gthread), "
        f"{args.seconds:.0f} s per row, paced = {args.rate:.0f} req/s offered, "
        f"db={'sqlite' if not args.database_url else args.database_url.split(':')[0]}, cores={os.cpu_count()}"
    )
    print(
        f"{'scenario':<8} {'mode':<10} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"{r.name:<8} {r.mode:<10} {r.requests:>8} {r.errors:>6} {r.throughput:>8.0f} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f}"
        )
    bare = next((r for r in results if r.name == "bare" and r.mode == "saturated"), None)
    if bare:
        for r in results:
            if r.mode == "saturated" and r.name != "bare":
                print(
                    f"{r.name}: {100 * r.throughput / bare.throughput:.0f}% of the bare endpoint's throughput"
                )


if __name__ == "__main__":
    main()
