"""Load test of the API under gunicorn, against a bare Flask endpoint under the same gunicorn settings.

Scenarios: GET one transcription (20 segments), list (20 per page), create (JSON with an upload id), and
the bare endpoint (bench/bare_app.py). Each is run two ways with plain threads, one keep-alive connection
per client (http.client: the lightest client in the standard library, so the client steals less CPU):
  - saturated: every client sends its next request as soon as the last answer arrives -> throughput;
  - paced: the clients together offer --rate requests/s at random phases -> latency at a realistic load.
The saturated runs take turns (bare, get, list, create, then again, --rounds times) and each scenario
keeps its best round: the machine's speed drifts by tens of percent over a minute on a shared host,
and turns put every scenario through the same drift.
A throw-away data folder, SQLite (or --database-url) and Redis db 9 (flushed before and after).

Both servers run under the same gunicorn settings, production's (compose.yaml): `-c python:api.gunicorn_conf`,
gthread workers, Prometheus multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a fresh folder) and the API's
default log level (INFO: one JSON line per request, written to a file in the data folder, as a log
collector would take it). Besides latency and throughput each row gives the gunicorn processes' CPU time
per request (utime + stime from /proc, master and workers): what a request costs the server, whatever the
client and the machine's other load do to the wall-clock figures. Redis's own CPU is not in it.

    .venv/bin/python bench/load.py --clients 100 --seconds 10 --workers 2 --threads 4
"""

from __future__ import annotations

import argparse
import contextlib
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
    cpu_ms: float  # the server's CPU time per request

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
    from api.models import Segment, Transcription, db
    from api.services.orgs import create_org
    from cliptext.settings import Settings
    from tests.seed import completed_upload

    init_db(Settings.from_env(), migrate=True)
    with db.connection_context():
        org, _, raw = create_org("bench", "bench@example.com", "enterprise", custom_rate_limit=100_000_000)
        upload = completed_upload(org, "bench.mp3", duration=60.0)
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


def start_gunicorn(
    app_spec: str, args: argparse.Namespace, extra: list[str], log: Path
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--config", "python:api.gunicorn_conf",
        "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--keep-alive", "10", "--log-level", "warning", *extra, app_spec,
    ]  # fmt: skip
    with log.open("ab") as log_file:  # the child keeps its own descriptor
        server = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=log_file
        )
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
                raise SystemExit(f"{app_spec} did not start; see {log}") from None
            time.sleep(0.2)


def server_cpu_seconds(server: subprocess.Popen) -> float:
    """utime + stime of the gunicorn master and its workers (Linux /proc), in seconds."""
    pids = [server.pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
        pids += [int(pid) for pid in children.split()]
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def run_clients(
    server: tuple[subprocess.Popen, int], name: str, request: tuple[str, str, bytes | None, dict[str, str]],
    args: argparse.Namespace, paced: bool,
) -> Result:  # fmt: skip
    process, port = server
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
    cpu_before = server_cpu_seconds(process)
    start_barrier.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    cpu = server_cpu_seconds(process) - cpu_before
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return Result(
        name, "paced" if paced else "saturated", len(latencies), errors, elapsed, pct(0.5), pct(0.99),
        1000 * cpu / max(1, len(latencies)),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario and mode")
    parser.add_argument("--rounds", type=int, default=3, help="saturated runs per scenario, best kept")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s offered in the paced mode")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (both; as compose.yaml)")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in the throw-away data folder")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--only", nargs="*", help="scenario names to run (bare, get, list, create)")
    parser.add_argument(
        "--log-level", default="INFO", help="the API's CLIPTEXT_LOG_LEVEL (INFO: production's)"
    )
    args = parser.parse_args()

    import redis

    data_dir = tempfile.mkdtemp(prefix="cliptext-load-")
    metrics_dir = Path(data_dir) / "metrics"
    metrics_dir.mkdir()
    os.environ.update(
        {
            "CLIPTEXT_DATA_DIR": data_dir,
            "REDIS_URL": args.redis_url,
            "CLIPTEXT_LOG_LEVEL": args.log_level,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
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
        log = Path(data_dir) / "servers.log"
        servers["bare"] = start_gunicorn("bare_app:app", args, ["--pythonpath", str(ROOT / "bench")], log)
        servers["api"] = start_gunicorn("api:create_app()", args, [], log)
        for round_no in range(args.rounds):
            for name in chosen:
                server, request = scenarios[name]
                results.append(run_clients(servers[server], name, request, args, paced=False))
                print(f"  round {round_no + 1}: {name} {results[-1].throughput:.0f} req/s", file=sys.stderr)
        results = [max((r for r in results if r.name == name), key=lambda r: r.throughput) for name in chosen]
        for name in chosen:
            server, request = scenarios[name]
            results.append(run_clients(servers[server], name, request, args, paced=True))
            print(f"  done {name} paced", file=sys.stderr, flush=True)
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
        for server, _ in servers.values():
            server.wait(timeout=30)
        store.flushdb()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"\n{args.clients} clients, gunicorn {args.workers} workers x {args.threads} threads (gthread), "
        f"{args.seconds:.0f} s per row, saturated: best of {args.rounds} rounds, "
        f"paced = {args.rate:.0f} req/s offered, "
        f"db={'sqlite' if not args.database_url else args.database_url.split(':')[0]}, "
        f"API log level {args.log_level}, cores={os.cpu_count()}"
    )
    print(
        f"{'scenario':<8} {'mode':<10} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'cpu ms/req':>10}"
    )
    for r in results:
        print(
            f"{r.name:<8} {r.mode:<10} {r.requests:>8} {r.errors:>6} {r.throughput:>8.0f} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.cpu_ms:>10.2f}"
        )
    bare = next((r for r in results if r.name == "bare" and r.mode == "saturated"), None)
    if bare:
        for r in results:
            if r.mode == "saturated" and r.name != "bare":
                print(
                    f"{r.name}: {100 * r.throughput / bare.throughput:.0f}% of the bare endpoint's "
                    f"throughput, {r.cpu_ms / bare.cpu_ms:.1f}x its server CPU per request"
                )


if __name__ == "__main__":
    main()
