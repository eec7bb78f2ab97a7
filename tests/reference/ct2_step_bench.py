"""CTranslate2 timings for comparison with our ONNX model, run ONLY under .venv-ref.

usage: .venv-ref/bin/python tests/reference/ct2_step_bench.py CT2_MODEL_DIR MEL_NPY THREADS COMPUTE_TYPE
prints JSON: encoder ms, and per decoding step ms for beam 1 and 5 (from generate() with two max_length
values, so prompt handling and the encoder cancel out, divided by the difference in generated tokens).
"""

import json
import sys
import time

import ctranslate2
import numpy as np


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    model_dir, mel_path, threads, compute_type = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    model = ctranslate2.models.Whisper(
        model_dir, device="cpu", compute_type=compute_type, intra_threads=threads
    )
    features = ctranslate2.StorageView.from_array(np.load(mel_path))
    prompt = [[50257, 50362]]
    result = {"encoder_ms": 1000 * best(lambda: model.encode(features))}
    short, long = 4, 40
    for beam in (1, 5):

        def run(n, beam=beam):
            return model.generate(features, prompt, beam_size=beam, max_length=n)

        # divide by the tokens really generated: max_length is not the number of steps generate() takes
        steps = len(run(long)[0].sequences_ids[0]) - len(run(short)[0].sequences_ids[0])
        result[f"step_ms_beam{beam}"] = 1000 * (best(lambda: run(long)) - best(lambda: run(short))) / steps
    print(json.dumps(result))


if __name__ == "__main__":
    main()
