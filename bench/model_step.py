"""Encoder and decoder-step latency of our ONNX model next to CTranslate2's (faster-whisper's engine).

`python -m bench.model_step [--threads 2] [--precisions fp32,int8]` prints, per precision, the encoder
time for one 30 s window and the decoder step time at B=1 (greedy) and B=5 (beam search, the beams
sharing one window's cross K/V), then the same measured on CTranslate2 in .venv-ref (float32 and int8).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages

from bench.machine import describe  # noqa: E402
from inference.audio import decode_audio  # noqa: E402
from inference.export import DEFAULT_NAME, default_source  # noqa: E402
from inference.features import FeatureExtractor, pad_or_trim  # noqa: E402
from inference.model import OnnxWhisper  # noqa: E402
from tests.media import AUDIO_DIR  # noqa: E402

JFK = AUDIO_DIR / "jfk.flac"


def best(fn, repeat: int = 10) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def ours(model_dir: Path, precision: str, threads: int, mel: np.ndarray) -> dict:
    model = OnnxWhisper(model_dir, precision=precision, device="cpu", threads=threads)
    cross = model.encode(mel)
    result = {"encoder_ms": best(lambda: model.encode(mel), repeat=3)}
    prompt = [50257, 50362, 843, 523, 616, 5891, 3399, 1265, 407, 644]  # 10 tokens seen, as mid-sentence
    for batch in (1, 5):
        _, cache = model.decode(np.array([prompt] * batch), None, cross)
        step = np.full((batch, 1), 534, dtype=np.int64)
        result[f"step_ms_beam{batch}"] = best(lambda cache=cache, step=step: model.decode(step, cache, cross))
    return result


def ct2(threads: int, compute_type: str, mel_path: Path) -> dict:
    out = subprocess.run(
        [
            str(ROOT / ".venv-ref/bin/python"),
            str(ROOT / "tests/reference/ct2_step_bench.py"),
            str(default_source()),
            str(mel_path),
            str(threads),
            compute_type,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / DEFAULT_NAME)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,int8")
    args = parser.parse_args()
    mel = pad_or_trim(FeatureExtractor()(decode_audio(str(JFK))))[None].astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        mel_path = Path(tmp) / "mel.npy"
        np.save(mel_path, mel)
        rows = {f"onnx {p}": ours(args.model, p, args.threads, mel) for p in args.precisions.split(",")}
        rows["ct2 float32"] = ct2(args.threads, "float32", mel_path)
        rows["ct2 int8"] = ct2(args.threads, "int8", mel_path)
    print(describe())
    print(f"{'':14} {'encoder ms':>11} {'step B=1 ms':>12} {'step B=5 ms':>12}   ({args.threads} threads)")
    for name, r in rows.items():
        print(f"{name:14} {r['encoder_ms']:11.1f} {r['step_ms_beam1']:12.2f} {r['step_ms_beam5']:12.2f}")


if __name__ == "__main__":
    main()
