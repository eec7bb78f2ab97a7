"""Fixtures every test folder shares: the model under test and the shared clips' transcripts."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.inference.exported_model import stack_model_dir
from tests.media import AUDIO_DIR


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (which make passes on, through cliptext.local_services) ends the run as Ctrl-C does, so the
    fixtures' teardown stops the servers the tests started; by default pytest died at once and left them."""
    signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return stack_model_dir()


@pytest.fixture(scope="session")
def transcripts() -> dict:
    return json.loads((AUDIO_DIR / "transcripts.json").read_text())
