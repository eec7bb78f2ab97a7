"""A broken model directory (a graph or the tokenizer missing or cut short) is an EngineError naming the
file: `python -m inference transcribe` prints one `error:` line and exits 2, the server gets the same
typed error instead of an onnxruntime or tokenizers exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inference.model import OnnxWhisper
from inference.transcribe import WhisperEngine
from inference.types import EngineError
from tests.inference.exported_model import JFK, ROOT

BROKEN = [
    ("encoder.fp32.onnx", "missing"),
    ("encoder.fp32.onnx", "truncated"),
    ("decoder.fp32.onnx", "truncated"),
    ("tokenizer.json", "missing"),
    ("tokenizer.json", "truncated"),
]


def broken_copy(model_dir: Path, parent: Path, name: str, damage: str) -> Path:
    """The model with its files linked, except `name`: gone, or its first kilobyte only."""
    copy = parent / "model"
    copy.mkdir()
    for path in model_dir.iterdir():
        (copy / path.name).symlink_to(path.resolve())
    (copy / name).unlink()
    if damage == "truncated":
        (copy / name).write_bytes((model_dir / name).read_bytes()[:1000])
    return copy


def transcribe_cli(model: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "inference",
            "transcribe",
            "--model",
            str(model),
            "--precision",
            "fp32",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(("name", "damage"), BROKEN)
def test_cli_reports_a_broken_model_file_in_one_line(model_dir, tmp_path, name, damage):
    broken = broken_copy(model_dir, tmp_path, name, damage)
    result = transcribe_cli(broken, str(JFK))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: INTERNAL: ") and str(broken / name) in lines[0]
    assert result.stdout == ""


def test_cli_reports_a_broken_aligner_in_one_line(model_dir, tmp_path):
    """The aligner is loaded on the first word timestamps, in the middle of a transcription."""
    broken = broken_copy(model_dir, tmp_path, "aligner.fp32.onnx", "truncated")
    result = transcribe_cli(broken, "--word-timestamps", str(JFK))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken / "aligner.fp32.onnx") in lines[0], result.stderr


@pytest.mark.parametrize(("name", "damage"), BROKEN)
def test_loading_a_broken_model_raises_engine_error(model_dir, tmp_path, name, damage):
    broken = broken_copy(model_dir, tmp_path, name, damage)
    with pytest.raises(EngineError) as raised:
        WhisperEngine(OnnxWhisper(broken, precision="fp32", device="cpu", threads=1))
    assert raised.value.code == "INTERNAL" and str(broken / name) in raised.value.message


def test_a_reader_that_goes_first_gets_no_traceback(model_dir):
    """`python -m inference transcribe FILE | head -1`: the pipe closed before the transcript was written
    ended in a BrokenPipeError traceback."""
    command = [sys.executable, "-m", "inference", "transcribe", "--model", str(model_dir), str(JFK)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the model has loaded and the transcript is ready
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr.decode()
    assert stderr.decode() == ""
