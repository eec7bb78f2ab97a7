"""Run a reference script under .venv-ref (faster-whisper) in a subprocess; the product never imports it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"


def run_reference(script: str, *args: str | Path, timeout: float = 120.0) -> str:
    """stdout of `.venv-ref/bin/python tests/reference/<script> args...`; the test fails if it fails."""
    if not REF_PYTHON.exists():
        pytest.fail(f"{REF_PYTHON} is missing: run `make setup-ref` (faster-whisper reference)")
    command = [str(REF_PYTHON), str(ROOT / "tests" / "reference" / script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        pytest.fail(f"reference {script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout
