"""Throughput of the gRPC server against the engine in-process: audio seconds per wall second.

`python -m bench.server [--clips jfk.flac,multilingual.mp3] [--streams 1,2,4] [--repeat 2]`
runs the same clips on 1, 2 and 4 concurrent streams with WhisperEngine in this process
and through a real `python -m inference.server` (same model, precision, threads), alternating run by
run (best of --repeat each), and prints a table.
The server's overhead at one stream should stay under 5%. It first prints the fresh server's startup time
and its first calls at each stream count, in turn (the first of them before anything else has run on
its engine threads).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages

from inference.client import Summary, TranscriberClient  # noqa: E402
from inference.engine_threads import EngineThreads  # noqa: E402
from inference.types import TranscribeOptions  # noqa: E402
from tests.media import AUDIO_DIR  # noqa: E402


def _engine_run(engine, clips: list[Path], options: TranscribeOptions) -> float:
    seconds = 0.0
    for clip in clips:
        segments, info = engine.transcribe(str(clip), options)
        for _ in segments:
            pass
        seconds += info.duration
    return seconds


def _server_run(client: TranscriberClient, clips: list[Path], options: TranscribeOptions) -> float:
    seconds = 0.0
    for clip in clips:
        for event in client.transcribe(clip, options):
            if isinstance(event, Summary):
                seconds += event.duration
    return seconds


def measure(run, streams: int, pool: ThreadPoolExecutor) -> float:
    """Audio seconds per wall second of `streams` concurrent workers each doing `run()`."""
    started = time.perf_counter()
    total = sum(pool.map(lambda _: run(), range(streams)))
    return total / (time.perf_counter() - started)


def start_server(args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen, str]:
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "inference.server", "--addr", "127.0.0.1:0",
            "--model-dir", str(args.model_dir), "--precision", args.precision, "--device", args.device,
            "--threads", str(args.threads), "--max-concurrent", str(max(args.streams)),
            "--max-audio-seconds", "100000",
        ],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log_path.read_text()
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        if port and re.search(r'(?<!NOT_)SERVING(\n|")', text):  # plain or JSON log lines
            return process, f"127.0.0.1:{port.group(1)}"
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start:\n{log_path.read_text()}")


def bench(args: argparse.Namespace, clips: list[Path], options: TranscribeOptions) -> dict:
    """{streams: (in-process rate, server rate)}; the two alternate run by run so load drift hits both."""
    from inference.model import CUDA, OnnxWhisper
    from inference.transcribe import WhisperEngine

    model = OnnxWhisper(args.model_dir, precision=args.precision, device=args.device, threads=args.threads)
    engine = WhisperEngine(model)
    print(f"model {model.config.name} {model.precision} on {model.provider}; clips: {args.clips}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spawned = time.perf_counter()
        process, addr = start_server(args, Path(tmp) / "server.log")
        print(f"server: SERVING {time.perf_counter() - spawned:.1f} s after it was started")
        try:
            for line in (Path(tmp) / "server.log").read_text().splitlines():
                if "warmed up" in line or "loaded in" in line:
                    print("server:", line)
            with (
                TranscriberClient(addr, timeout=3600) as client,
                ThreadPoolExecutor(max(args.streams)) as pool,
            ):
                # a fresh server's first calls, before anything else ran on its engine threads: the
                # startup warm-up (inference/model.py, warm_up) must make them as fast as later ones
                for n in args.streams:
                    first = measure(partial(_server_run, client, clips, options), n, pool)
                    print(f"server: first call at {n} stream(s) on the fresh server: {first:.1f} audio s/s")
                # in process as in the server: the engine runs on warm engine threads (on CUDA a
                # thread's first runs are seconds slower, see inference/engine_threads.py)
                threads = EngineThreads(max(args.streams))
                if model.provider == CUDA:
                    threads.warm(model.warm_up)  # as the server does (a clip would leave shapes cold)
                else:
                    threads.warm(partial(_engine_run, engine, clips[:1], options))
                _server_run(client, clips[:1], options)
                in_process = partial(threads.call, _engine_run, engine, clips, options)
                for n in args.streams:
                    local = served = 0.0
                    for _ in range(args.repeat):
                        local = max(local, measure(in_process, n, pool))
                        served = max(served, measure(partial(_server_run, client, clips, options), n, pool))
                    results[n] = (local, served)
                threads.shutdown()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "whisper-tiny.en")
    parser.add_argument("--clips", default="jfk.flac,multilingual.mp3,hotwords.mp3")
    parser.add_argument("--streams", default="1,2,4", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args(argv)
    clips = [AUDIO_DIR / name for name in args.clips.split(",")]
    options = TranscribeOptions(beam_size=args.beam_size)

    results = bench(args, clips, options)
    print(f"{'streams':>7} | {'in-process (audio s/s)':>22} | {'server (audio s/s)':>18} | {'overhead':>8}")
    for n, (local, served) in results.items():
        print(f"{n:>7} | {local:>22.1f} | {served:>18.1f} | {1 - served / local:>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
