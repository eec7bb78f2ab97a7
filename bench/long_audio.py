"""A 2-hour recording through the real inference server: wall time and the server's memory.

The file is speech then silence every minute (jfk.flac + hotwords.mp3), Opus in Ogg, built by
repeating the packets of one encoded minute (tests/reliability/long_media.py): ~60 MB on disk for 2 h.
The server runs as its own process (`python -m inference.server`); its resident memory is sampled from
/proc while the file is transcribed over gRPC. A server that decodes and transcribes window by window
keeps the same peak for 2 h as for 10 min; one that holds the whole recording needs 2 h x 16000 x 4
bytes = 460 MB for the samples alone, plus every copy of them.

Run: `.venv/bin/python bench/long_audio.py [--minutes 120] [--precision fp32] [--threads 0] [--beam-size 5]`
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.client import Progress, Segment, Summary, TranscriberClient  # noqa: E402
from tests.inference.exported_model import stack_model_dir  # noqa: E402
from tests.jobs.stack import Stack, free_port  # noqa: E402
from tests.reliability.long_media import repeated_speech  # noqa: E402
from tests.reliability.pipeline import RssSampler, rss_mb  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--file", type=Path, default=None, help="transcribe this file instead")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()

    model_dir = stack_model_dir()
    with tempfile.TemporaryDirectory(prefix="cliptext-long-") as tmp:
        path = args.file
        if path is None:
            started = time.perf_counter()
            path = repeated_speech(Path(tmp) / f"speech-{args.minutes:g}min.opus", args.minutes * 60)
            print(
                f"built {path.name}: {path.stat().st_size / 1e6:.1f} MB"
                f" in {time.perf_counter() - started:.1f} s"
            )
        port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "CLIPTEXT_SECRET_KEY": secrets.token_urlsafe(16),
            "CLIPTEXT_MAX_AUDIO_SECONDS": str(max(4 * 3600, args.minutes * 60 + 60)),
        }
        stack = Stack(Path(tmp), env, model_dir, port, free_port(), redis_url="redis://127.0.0.1:1/0")
        stack.inference_args = ("--precision", args.precision, "--threads", str(args.threads))
        server = stack.start_inference()
        try:
            pid = server.process.pid
            idle = rss_mb(pid)
            profile: list[tuple[float, float, float]] = []  # (wall s, audio s done, RSS MiB)
            segments = 0
            summary: Summary | None = None
            started = time.perf_counter()
            with RssSampler(pid, interval=0.2) as rss, TranscriberClient(stack.inference_addr) as client:
                for event in client.transcribe(path, beam_size=args.beam_size, timeout=6 * 3600):
                    if isinstance(event, Segment):
                        segments += 1
                    elif isinstance(event, Progress):
                        now = time.perf_counter() - started
                        if not profile or now - profile[-1][0] >= 60:
                            profile.append((now, event.seconds_done, rss_mb(pid)))
                            print(
                                f"  {now:7.1f} s wall  {event.seconds_done:7.1f} s audio"
                                f"  RSS {profile[-1][2]:.0f} MiB"
                            )
                    elif isinstance(event, Summary):
                        summary = event
            wall = time.perf_counter() - started
        finally:
            server.stop()
    assert summary is not None
    print(
        f"file: {path.name}, {summary.duration:.0f} s of audio ({summary.duration / 3600:.2f} h),"
        f" {segments} segments"
    )
    print(
        f"wall {wall:.1f} s = {summary.duration / wall:.1f}x real time"
        f" ({args.precision}, threads {args.threads})"
    )
    print(
        f"inference server RSS: idle {idle:.0f} MiB, peak {rss.peak_mb:.0f} MiB"
        f" (+{rss.peak_mb - idle:.0f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
