"""What a CUDA session's first run at a new shape costs, on the thread that ran it and on another.

The decoder's input shapes change at every step (the self-attention cache grows by one token), and on
CUDA ONNX Runtime's first run at a new shape is slow on each thread; this is why the server warms every
engine thread at startup (inference/model.py, warm_up). Prints ms per decoder call:

    .venv/bin/python bench/cuda_shapes.py [--precision fp16] [--option arena_extend_strategy=kSameAsRequested]

`--option KEY=VALUE` (repeatable) passes CUDA provider options, to try one against the default.
Prints a line and exits 0 on a machine with no NVIDIA device (so `make bench` passes there); exits 1
when there is one and the decoder does not run on CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference import model as onnx_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "models/whisper-tiny.en"))
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--option", action="append", default=[], help="CUDA provider option KEY=VALUE")
    args = parser.parse_args()
    if not onnx_model.has_nvidia_device():
        print("no NVIDIA device here: nothing to measure")
        return 0
    options = dict(option.split("=", 1) for option in args.option)
    if options:
        plain = onnx_model.OnnxWhisper._session

        def with_options(self, part, providers):
            providers = [(p, options) if p == onnx_model.CUDA else p for p in providers]
            return plain(self, part, providers)

        onnx_model.OnnxWhisper._session = with_options
    model = onnx_model.OnnxWhisper(args.model, precision=args.precision, device="cuda")
    if model.provider != onnx_model.CUDA:
        print(f"the model runs on {model.provider}, not CUDA")
        return 1
    sot = model.config.sot
    cross = model.encode(np.zeros((1, model.config.n_mels, 3000), np.float32))

    def prompts(first: int, last: int) -> float:
        """ms per call for prompts of first..last tokens (no cache)."""
        started = time.perf_counter()
        for length in range(first, last + 1):
            model.decode(np.full((1, length), sot, np.int64), None, cross)
        return (time.perf_counter() - started) / (last - first + 1) * 1000

    def steps(beams: int, upto: int) -> float:
        """ms per one-token step until the cache holds `upto` tokens."""
        token = np.full((beams, 1), sot, np.int64)
        _, cache = model.decode(token, None, cross)
        started, calls = time.perf_counter(), 0
        while cache.length < upto:
            _, cache = model.decode(token, cache, cross)
            calls += 1
        return (time.perf_counter() - started) / calls * 1000

    first_thread, second_thread = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    rows = [
        ("thread 1: prompts of 1-24 tokens, new shapes", first_thread, prompts, 1, 24),
        ("thread 1: the same prompts again", first_thread, prompts, 1, 24),
        ("thread 1: steps up to 48 cached, new shapes", first_thread, steps, 1, 48),
        ("thread 1: the same steps again", first_thread, steps, 1, 48),
        ("thread 2: the steps thread 1 has run", second_thread, steps, 1, 48),
        ("thread 2: the same steps again", second_thread, steps, 1, 48),
    ]
    print(json.dumps({"precision": model.precision, "provider options": options}))
    for label, thread, fn, *fn_args in rows:
        print(f"{label:<45} {thread.submit(fn, *fn_args).result():8.2f} ms per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
