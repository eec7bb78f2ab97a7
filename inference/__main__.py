"""`python -m inference transcribe FILE`: transcribe one file locally with the ONNX engine.

Prints plain text by default; --format json|srt|vtt for segments with times. Exit code 2 for bad audio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from cliptext import subtitles
from cliptext.settings import settings_or_exit
from inference.transcribe import WhisperEngine
from inference.types import EngineError, Segment, TranscribeOptions


def render(segments: list[Segment], fmt: str) -> str:
    """The transcript as text, json, srt or vtt (subtitles laid out as the API serves them)."""
    if fmt == "json":
        return json.dumps(
            {"text": "".join(s.text for s in segments).strip(), "segments": [asdict(s) for s in segments]}
        )
    if fmt in ("srt", "vtt"):
        rows = [asdict(s) for s in segments]
        return subtitles.srt(rows) if fmt == "srt" else subtitles.vtt(rows)
    return "".join(s.text for s in segments).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe an audio or video file")
    t.add_argument("file")
    t.add_argument("--beam-size", type=int, default=5)
    t.add_argument("--precision", choices=("auto", "fp32", "int8", "fp16"), default="auto")
    t.add_argument("--format", choices=("text", "json", "srt", "vtt"), default="text")
    t.add_argument("--model", default=None, help="exported model directory (default CLIPTEXT_MODEL_DIR)")
    t.add_argument("--language", default=None)
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    model_dir = args.model or settings_or_exit().model_dir
    try:
        options = TranscribeOptions(
            beam_size=args.beam_size, language=args.language, word_timestamps=args.word_timestamps
        )
        engine = WhisperEngine.load(model_dir, precision=args.precision, threads=args.threads)
        segments, _info = engine.transcribe(args.file, options)
        print(render(list(segments), args.format), flush=True)
    except EngineError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went first (`| head`): no traceback, and none again when Python flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
