"""Our ONNX engine against faster-whisper, side by side: time, peak RSS, WER, identical fp32 text.

Wall time is at the mercy of a shared machine; cpu_ratio (process CPU time, all threads) is steadier.

Both sides transcribe the same 16 kHz samples (decoded once by inference.audio) with 2 threads and the
same options, each configuration in its own process (so peak RSS is that configuration's); a warm-up run
first, then the best of --repeat timed runs. faster-whisper runs under .venv-ref (tests/reference).

    .venv/bin/python bench/engine.py [--repeat 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


CLIPS = ("jfk.flac", "multilingual.mp3")
CONFIGS = (("fp32", "float32", 1), ("fp32", "float32", 5), ("int8", "int8", 1), ("int8", "int8", 5))


def _ours_worker(args: argparse.Namespace) -> None:
    """Child process: our engine on the .npy files, JSON like fw_reference.py."""
    import numpy as np

    from inference.transcribe import WhisperEngine
    from inference.types import TranscribeOptions

    engine = WhisperEngine.load(args.model, precision=args.precision, device="cpu", threads=2)
    options = TranscribeOptions(beam_size=args.beam)
    out = {"files": {}}
    for path in args.files:
        audio = np.load(path)
        best, best_cpu = None, None
        for _ in range(args.repeat + 1):  # the first run warms up
            started, cpu_started = time.perf_counter(), time.process_time()
            segments, _ = engine.transcribe(audio, options)
            text = "".join(s.text for s in segments)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            best = seconds if best is None else min(best, seconds)
            best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
        out["files"][path] = {"seconds": best, "cpu_seconds": best_cpu, "text": text}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(out, sys.stdout)


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best_of(a: dict, b: dict) -> dict:
    """Per file, the faster of two runs' results (wall and CPU time each kept at its minimum)."""
    files = {}
    for path, first in a["files"].items():
        second = b["files"][path]
        best = dict(first if first["seconds"] <= second["seconds"] else second)
        best["cpu_seconds"] = min(first["cpu_seconds"], second["cpu_seconds"])
        files[path] = best
    return {**a, "files": files, "peak_rss_mb": max(a["peak_rss_mb"], b["peak_rss_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per process (after a warm-up)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="processes per side, taking turns (for a machine that drifts)"
    )
    parser.add_argument("--model", default=str(ROOT / "models/whisper-tiny.en"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--beam", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _ours_worker(args)
        return

    import numpy as np

    from inference.audio import decode_audio
    from tests.inference.reference_runs import ground_truth, wer
    from tests.media import AUDIO_DIR

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    files = {}
    for clip in CLIPS:
        files[clip] = str(work / (clip + ".npy"))
        np.save(files[clip], decode_audio(AUDIO_DIR / clip))
    rows = []
    for precision, compute_type, beam in CONFIGS:
        ours_cmd = [sys.executable, __file__, "--worker", "--precision", precision, "--beam", str(beam)]
        ours_cmd += ["--repeat", str(args.repeat), "--model", args.model, *files.values()]
        ref_cmd = [str(ROOT / ".venv-ref/bin/python"), "tests/reference/fw_reference.py"]
        ref_cmd += ["--compute-type", compute_type, "--threads", "2", "--repeat", str(args.repeat + 1)]
        ref_cmd += ["--options", json.dumps({"beam_size": beam}), *files.values()]
        ours, ref = _run(ours_cmd), _run(ref_cmd)
        for _ in range(args.rounds - 1):  # the two sides take turns, so a drift of the machine hits both
            ours, ref = _best_of(ours, _run(ours_cmd)), _best_of(ref, _run(ref_cmd))
        for clip, path in files.items():
            o, r = ours["files"][path], ref["files"][path]
            truth = ground_truth(clip)
            rows.append(
                (
                    clip,
                    precision,
                    beam,
                    o["seconds"],
                    r["seconds"],
                    o["seconds"] / r["seconds"],
                    o["cpu_seconds"] / r["cpu_seconds"],
                    ours["peak_rss_mb"],
                    ref["peak_rss_mb"],
                    wer(truth, o["text"]),
                    wer(truth, r["text"]),
                    ("yes" if o["text"] == r["text"] else "NO") if precision == "fp32" else "-",
                )
            )
    header = (
        "clip               prec beam  ours_s   ref_s  ratio cpu_ratio rss_ours rss_ref  wer_ours wer_ref"
        " same_text"
    )
    from bench.machine import describe

    print(describe())
    print(header)
    for row in rows:
        print(
            f"{row[0]:<18} {row[1]:<4} {row[2]:>4} {row[3]:7.2f} {row[4]:7.2f} {row[5]:6.2f} {row[6]:9.2f} "
            f"{row[7]:8.0f} {row[8]:7.0f} {row[9]:9.3f} {row[10]:7.3f} {row[11]:>9}"
        )


if __name__ == "__main__":
    main()
