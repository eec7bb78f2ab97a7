"""Soak: 50 jobs through the real stack while it is broken on purpose, then the figures.

Workers are SIGKILLed every few seconds (and replaced), the inference server is killed and restarted
once, Redis is killed and restarted once without persistence (its queues lost). Every transcription
the API accepted must end completed or failed with a code; none lost, none with duplicated segments.
Uses a throwaway redis-server on an ephemeral port (never the machine's Redis).

Run: `.venv/bin/python bench/soak.py [--jobs 50] [--workers 2] [--kill-every 4]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.inference.exported_model import stack_model_dir  # noqa: E402
from tests.jobs.stack import running  # noqa: E402
from tests.reliability.chaos import CHAOS_ENV, run_chaos  # noqa: E402
from tests.reliability.redis_server import RedisServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--submit-every", type=float, default=1.0, help="seconds between submissions")
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between worker kills")
    parser.add_argument("--inference-at", type=float, default=10.0, help="restart the server at this second")
    parser.add_argument("--redis-at", type=float, default=25.0, help="restart Redis at this second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_dir = stack_model_dir()
    with tempfile.TemporaryDirectory(prefix="cliptext-soak-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", appendonly=False)
        redis_server.start()
        try:
            with running(Path(tmp), model_dir, redis_url=redis_server.url, **CHAOS_ENV) as stack:
                report = run_chaos(
                    stack,
                    redis_server,
                    jobs=args.jobs,
                    workers=args.workers,
                    submit_every=args.submit_every,
                    kill_every=args.kill_every,
                    inference_at=args.inference_at,
                    redis_at=args.redis_at,
                    settle_timeout=1200,
                    seed=args.seed,
                )
        finally:
            redis_server.stop()
    print("\n".join(report.events))
    print("\n".join(report.lines()))
    for problem in report.lost + report.duplicated + report.wrong_text + report.missing_uploads:
        print("PROBLEM", problem)
    broken = report.lost or report.duplicated or report.wrong_text or report.missing_uploads
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
