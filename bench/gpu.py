"""The engine on a GPU: is CUDA really the execution provider, how fast is it against the CPU of the same
machine, and what does fp16 on CUDA do to the words?

Each configuration loads its own WhisperEngine in this process and transcribes the shared clips (decoded
once) after a warm-up; the best of --repeat runs is kept. WER is against the shared transcripts;
`same` compares the text with the CPU fp32 run, the configuration the oracle tests pin to faster-whisper.

    .venv/bin/python bench/gpu.py [--clips jfk.flac,multilingual.mp3] [--repeat 3]

Exits 1 when a session asked to run on CUDA runs on something else (no GPU, or no CUDA libraries).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.audio import decode_audio  # noqa: E402
from inference.model import CUDA, has_nvidia_device  # noqa: E402
from inference.transcribe import WhisperEngine  # noqa: E402
from inference.types import TranscribeOptions  # noqa: E402
from tests.inference.reference_runs import AUDIO, ground_truth, wer  # noqa: E402


def _time(engine: WhisperEngine, audio, options: TranscribeOptions, repeat: int) -> tuple[float, str]:
    best, text = None, ""
    for _ in range(repeat + 1):  # the first run warms up (CUDA kernels, allocator, caches)
        started = time.perf_counter()
        segments, _ = engine.transcribe(audio, options)
        text = "".join(s.text for s in segments)
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return best, text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "models/whisper-tiny.en"))
    parser.add_argument("--clips", default="jfk.flac,multilingual.mp3")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--devices", default="auto", help="cuda,cpu or cpu; auto: cuda too when an NVIDIA device node exists"
    )
    args = parser.parse_args()

    providers = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, providers {providers}, {os.cpu_count()} CPUs")
    configs = [("cpu", "fp32", 2), ("cpu", "fp32", os.cpu_count() or 1)]
    devices = args.devices.split(",")
    if "cuda" in devices or (args.devices == "auto" and has_nvidia_device()):
        configs = [("cuda", "fp16", 0), ("cuda", "fp32", 0), *configs]
    clips = {name: decode_audio(AUDIO / name) for name in args.clips.split(",")}
    beams = [int(b) for b in args.beams.split(",")]
    rows, reference, failures = [], {}, 0
    for device, precision, threads in configs:
        engine = WhisperEngine.load(args.model, precision=precision, device=device, threads=threads)
        provider = engine.model.provider
        if device == "cuda" and provider != CUDA:
            failures += 1
        for beam in beams:
            options = TranscribeOptions(beam_size=beam)
            for clip, audio in clips.items():
                seconds, text = _time(engine, audio, options, args.repeat)
                key = (clip, beam)
                if device == "cpu" and precision == "fp32":
                    reference.setdefault(key, text)
                rows.append(
                    (device, precision, threads, provider, beam, clip, seconds, audio.size / 16000, text)
                )
        del engine
    print(
        f"{'device':<6} {'prec':<4} {'thr':>3} {'provider':<26} {'beam':>4} {'clip':<18} {'seconds':>8}"
        f" {'audio_s/s':>9} {'wer':>6} same_as_cpu_fp32"
    )
    for device, precision, threads, provider, beam, clip, seconds, duration, text in rows:
        same = "yes" if text == reference.get((clip, beam)) else "NO"
        print(
            f"{device:<6} {precision:<4} {threads:>3} {provider:<26} {beam:>4} {clip:<18} {seconds:8.3f}"
            f" {duration / seconds:9.1f} {wer(ground_truth(clip), text):6.3f} {same}"
        )
    if failures:
        print("a session asked for CUDA did not run on CUDAExecutionProvider")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
