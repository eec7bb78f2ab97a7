"""How many streams the inference server decodes at once when nobody said (python -m inference.server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cliptext.settings import Settings
from inference.model import has_nvidia_device
from inference.server import GPU_STREAMS, parse_args


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLIPTEXT_SECRET_KEY", "test")
    monkeypatch.delenv("CLIPTEXT_MAX_CONCURRENT", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)  # a 16-core host, as GPU machines often are
    return Settings.from_env()


def test_unset_means_one_stream_per_core_on_the_cpu(settings):
    assert parse_args(["--device", "cpu"], settings).max_concurrent == 16


def test_unset_means_few_streams_on_a_gpu(settings):
    """Each engine thread warms up for tens of seconds on CUDA: 16 would hold SERVING back for minutes.
    onnxruntime-gpu (pyproject) lists the CUDA provider, so --device cuda will try it."""
    assert parse_args(["--device", "cuda"], settings).max_concurrent == GPU_STREAMS
    auto = parse_args(["--device", "auto"], settings).max_concurrent
    assert auto == (GPU_STREAMS if has_nvidia_device() else 16)


def test_a_configured_value_wins(settings, monkeypatch):
    assert parse_args(["--device", "cuda", "--max-concurrent", "5"], settings).max_concurrent == 5
    monkeypatch.setenv("CLIPTEXT_MAX_CONCURRENT", "3")
    assert parse_args(["--device", "cuda"], Settings.from_env()).max_concurrent == 3
