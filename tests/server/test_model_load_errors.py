"""A server given a damaged export stops at once with one log line naming the file, not a traceback
(and not a process listening forever NOT_SERVING, which orchestrators would keep probing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _damaged_copy(model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for file in model_dir.iterdir():
        if file.is_file():
            (target / file.name).symlink_to(file)
    encoder = target / "encoder.fp32.onnx"
    encoder.unlink()
    encoder.write_bytes((model_dir / "encoder.fp32.onnx").read_bytes()[:4096])  # a cut download
    return target


def test_a_damaged_export_stops_the_server_with_one_line(model_dir: Path, tmp_path: Path) -> None:
    damaged = _damaged_copy(model_dir, tmp_path / "model")
    done = subprocess.run(
        [sys.executable, "-m", "inference.server", "--addr", "127.0.0.1:0", "--model-dir", str(damaged),
         "--precision", "fp32", "--threads", "1"],
        cwd=ROOT, env={**os.environ, "CLIPTEXT_DATA_DIR": str(tmp_path), "CLIPTEXT_LOG_FORMAT": "text"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "cannot load the model" in output and "encoder.fp32.onnx" in output
