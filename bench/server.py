"""Throughput of the gRPC server against the engine in-process: audio seconds per wall second.

`python -m bench.server [--clips jfk.flac,multilingual.mp3] [--streams 1,2,4] [--repeat 2]`
runs the same clips on 1, 2 and 4 concurrent streams, first with WhisperEngine in this process,
then through a real `python -m inference.server` (same model, precision, threads), and prints a table.
The server's overhead at one stream should stay under 5%.
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

from inference.client import Summary, TranscriberClient
from inference.types import TranscribeOptions

ROOT = Path(__file__).resolve().parents[1]
AUDIO_DIR = Path(os.environ.get("CLIPTEXT_TEST_AUDIO_DIR", ROOT.parent / "shared" / "audio"))


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


def measure(run, streams: int, repeat: int) -> float:
    """Best audio-seconds-per-wall-second over `repeat` runs of `streams` concurrent workers."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            total = sum(pool.map(lambda _: run(), range(streams)))
        best = max(best, total / (time.perf_counter() - started))
    return best


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
        if port and "SERVING\n" in text:
            return process, f"127.0.0.1:{port.group(1)}"
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start:\n{log_path.read_text()}")


def bench_in_process(args: argparse.Namespace, clips: list[Path], options: TranscribeOptions) -> dict:
    from inference.model import OnnxWhisper
    from inference.transcribe import WhisperEngine

    model = OnnxWhisper(args.model_dir, precision=args.precision, device=args.device, threads=args.threads)
    engine = WhisperEngine(model)
    print(f"model {model.config.name} {model.precision} on {model.provider}; clips: {args.clips}")
    _engine_run(engine, clips[:1], options)  # warm-up
    return {n: measure(partial(_engine_run, engine, clips, options), n, args.repeat) for n in args.streams}


def bench_server(args: argparse.Namespace, clips: list[Path], options: TranscribeOptions) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        process, addr = start_server(args, Path(tmp) / "server.log")
        try:
            with TranscriberClient(addr, timeout=3600) as client:
                _server_run(client, clips[:1], options)  # warm-up
                run = partial(_server_run, client, clips, options)
                return {n: measure(run, n, args.repeat) for n in args.streams}
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


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

    in_process = bench_in_process(args, clips, options)
    served = bench_server(args, clips, options)
    print(f"{'streams':>7} | {'in-process (audio s/s)':>22} | {'server (audio s/s)':>18} | {'overhead':>8}")
    for n in args.streams:
        overhead = 1 - served[n] / in_process[n]
        print(f"{n:>7} | {in_process[n]:>22.1f} | {served[n]:>18.1f} | {overhead:>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
