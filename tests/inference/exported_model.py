"""Shared by the inference tests: the exported tiny.en model and CTranslate2 reference outputs for jfk.

The model is exported into models/ (idempotent: a matching export is reused); the reference runs in
.venv-ref in a subprocess, since the product never imports ctranslate2.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from inference.export import DEFAULT_NAME, default_source, export
from tests.media import AUDIO_DIR

ROOT = Path(__file__).resolve().parents[2]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
JFK = AUDIO_DIR / "jfk.flac"
if not JFK.exists():
    JFK = ROOT.parent / "shared" / "audio" / "jfk.flac"
ALL_PRECISIONS = ("fp32", "int8", "fp16")


def exported_model_dir() -> Path:
    out = ROOT / "models"
    export(default_source(), out, DEFAULT_NAME, ALL_PRECISIONS)
    return out / DEFAULT_NAME


def stack_model_dir() -> Path:
    """The model the server and stack tests run: CLIPTEXT_MODEL_DIR, else the tiny.en export (made if
    missing; an up-to-date export is reused)."""
    configured = os.environ.get("CLIPTEXT_MODEL_DIR")
    return Path(configured).resolve() if configured else exported_model_dir()


def ct2_reference(out_dir: Path) -> dict:
    """mel, encoder hidden state and greedy/beam tokens from CTranslate2 for jfk."""
    subprocess.run(
        [
            str(REF_PYTHON),
            str(ROOT / "tests/reference/ct2_reference.py"),
            str(JFK),
            str(default_source()),
            str(out_dir),
        ],
        check=True,
        timeout=300,
    )
    ref = json.loads((out_dir / "reference.json").read_text())
    ref["mel"] = np.load(out_dir / "mel.npy")
    ref["encoder"] = np.load(out_dir / "encoder.npy")
    return ref
