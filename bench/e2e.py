"""End-to-end latency and throughput of the job pipeline against the engine alone (real processes).

1. The 60 s clip: seconds from POST /v1/transcriptions to `completed` (polled every 50 ms) vs the
   engine transcribing the same file in-process; target: e2e <= 1.1 x engine + 0.3 s.
2. 20 jobs of jfk.mp3 at once, 2 workers: audio seconds per wall second vs the engine alone.

Run: `.venv/bin/python bench/e2e.py` (needs Redis; uses Redis database 5, flushed).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.export import DEFAULT_NAME, default_source, export  # noqa: E402
from inference.transcribe import WhisperEngine  # noqa: E402
from tests.jobs.stack import launch, shutdown  # noqa: E402
from tests.media import AUDIO_DIR  # noqa: E402

LONG = AUDIO_DIR / "multilingual.mp3"
SHORT = AUDIO_DIR / "jfk.mp3"
PRECISION = os.environ.get("BENCH_PRECISION", "fp32")
THREADS = int(os.environ.get("BENCH_THREADS", "0"))
JOBS = int(os.environ.get("BENCH_JOBS", "20"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


def engine_seconds(engine: WhisperEngine, path: Path) -> tuple[float, float]:
    """(wall seconds, audio seconds) of one full transcription in-process."""
    started = time.perf_counter()
    segments, info = engine.transcribe(str(path))
    for _ in segments:
        pass
    return time.perf_counter() - started, info.duration


def wait_completed(stack, ids: list[str], poll: float = 0.05) -> float:
    pending = set(ids)
    while pending:
        for transcription_id in list(pending):
            body = stack.get(transcription_id)
            if body["status"] == "completed":
                pending.discard(transcription_id)
            elif body["status"] in ("failed", "canceled"):
                raise RuntimeError(f"{transcription_id}: {body['status']} {body['error']}")
        if pending:
            time.sleep(poll)
    return time.perf_counter()


def main() -> int:
    if os.environ.get("CLIPTEXT_MODEL_DIR"):
        model_dir = Path(os.environ["CLIPTEXT_MODEL_DIR"]).resolve()
    else:  # exported if missing or stale, reused otherwise (as the tests do)
        export(default_source(), ROOT / "models", DEFAULT_NAME, ("fp32", "int8", "fp16"))
        model_dir = ROOT / "models" / DEFAULT_NAME
    engine = WhisperEngine.load(model_dir, precision=PRECISION, threads=THREADS)
    engine_seconds(engine, SHORT)  # warm up
    long_engine = statistics.median(engine_seconds(engine, LONG)[0] for _ in range(2))
    short_runs = [engine_seconds(engine, SHORT) for _ in range(3)]
    short_rate = statistics.median(audio / wall for wall, audio in short_runs)
    del engine

    with tempfile.TemporaryDirectory(prefix="cliptext-bench-") as tmp:
        stack = launch(
            Path(tmp),
            model_dir,
            inference_args=("--precision", PRECISION, "--threads", str(THREADS)),
        )
        try:
            stack.start_worker()
            long_upload = stack.upload(LONG, "audio/mpeg")
            short_upload = stack.upload(SHORT, "audio/mpeg")
            stack.wait(stack.create(short_upload)["id"])  # warm up the server and the worker
            latencies = []
            for _ in range(2):
                started = time.perf_counter()
                created = stack.create(long_upload)
                latencies.append(wait_completed(stack, [created["id"]]) - started)
            long_e2e = statistics.median(latencies)

            for _ in range(WORKERS - 1):
                stack.start_worker()
            started = time.perf_counter()
            ids = [stack.create(short_upload)["id"] for _ in range(JOBS)]
            wall = wait_completed(stack, ids, poll=0.2) - started
            audio = sum(stack.get(i)["duration"] for i in ids)
        finally:
            shutdown(stack)

    target = 1.1 * long_engine + 0.3
    print(f"precision={PRECISION} threads={THREADS or 'auto'} cpus={os.cpu_count()}")
    verdict = "OK" if long_e2e <= target else "MISSED"
    print(
        f"60 s clip: engine alone {long_engine:.2f} s, create->completed {long_e2e:.2f} s "
        f"({long_e2e / long_engine:.2f}x); target <= {target:.2f} s: {verdict}"
    )
    print(
        f"{JOBS} x jfk.mp3 with {WORKERS} workers: {audio / wall:.1f} audio s per wall s "
        f"(wall {wall:.1f} s) vs engine alone {short_rate:.1f} ({audio / wall / short_rate:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
