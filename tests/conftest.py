"""Fixtures every test folder shares: the model under test and the shared clips' transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.inference.exported_model import stack_model_dir
from tests.media import AUDIO_DIR


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return stack_model_dir()


@pytest.fixture(scope="session")
def transcripts() -> dict:
    return json.loads((AUDIO_DIR / "transcripts.json").read_text())
