"""A bad setting stops a process at once with one line naming the variable, never a traceback, and
never a limit that silently does not hold (CLIPTEXT_MAX_AUDIO_SECONDS=nan compared false: no limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cliptext.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]

BAD_VALUES = [
    ("CLIPTEXT_THREADS", "abc"),
    ("CLIPTEXT_THREADS", "-2"),
    ("CLIPTEXT_MAX_QUEUE", "-3"),
    ("CLIPTEXT_MAX_CONCURRENT", "2.5"),
    ("CLIPTEXT_MAX_AUDIO_SECONDS", "nan"),
    ("CLIPTEXT_MAX_AUDIO_SECONDS", "0"),
    ("CLIPTEXT_MAX_AUDIO_SECONDS", "inf"),
    ("CLIPTEXT_MAX_AUDIO_BYTES", "0"),
    ("CLIPTEXT_MAX_UPLOAD_BYTES", "2GB"),
    ("CLIPTEXT_UPLOAD_IDLE_SECONDS", "0"),
    ("CLIPTEXT_OPENAI_WAIT_SECONDS", "-1"),
    ("CLIPTEXT_JOB_RETRY_INTERVALS", "10,-5"),
    ("CLIPTEXT_JOB_RETRY_INTERVALS", "10,thirty"),
    ("CLIPTEXT_WEBHOOK_TIMEOUT", "0"),
    ("CLIPTEXT_WORKER_HEARTBEAT", "0"),
    ("CLIPTEXT_WORKER_METRICS_PORT", "70000"),
    ("CLIPTEXT_PRECISION", "fp8"),
    ("CLIPTEXT_DEVICE", "tpu"),
    ("CLIPTEXT_LOG_FORMAT", "xml"),
    ("CLIPTEXT_LOG_LEVEL", "verbose"),
    ("CLIPTEXT_WEBHOOK_ALLOW_PRIVATE", "maybe"),
    ("CLIPTEXT_AUTH_CACHE_SECONDS", "-1"),
]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_variable(data_dir, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert name in str(refused.value) and repr(value) in str(refused.value)


def test_good_values_are_read(data_dir, monkeypatch):
    for name, value in {
        "CLIPTEXT_LOG_LEVEL": "warning",
        "CLIPTEXT_PRECISION": "INT8",
        "CLIPTEXT_WEBHOOK_ALLOW_PRIVATE": "On",
        "CLIPTEXT_MAX_AUDIO_SECONDS": "90.5",
        "CLIPTEXT_JOB_RETRY_INTERVALS": "0, 5,10",
        "CLIPTEXT_MAX_CONCURRENT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.log_level == "WARNING"
    assert settings.inference_precision == "int8"
    assert settings.webhook_allow_private is True
    assert settings.max_audio_seconds == 90.5
    assert settings.job_retry_intervals == (0, 5, 10)
    assert settings.inference_max_concurrent is None  # 0: chosen by device


def test_the_defaults_are_valid(data_dir):
    Settings.from_env()


ENTRY_POINTS = {
    "inference server": [sys.executable, "-m", "inference.server"],
    "worker": [sys.executable, "-m", "jobs.worker", "--burst"],
    "make run's stack": [sys.executable, "-m", "cliptext.stack"],
    "engine CLI": [sys.executable, "-m", "inference", "transcribe", "missing.wav"],
    "gunicorn": [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:api.gunicorn_conf",
        "--bind",
        "127.0.0.1:0",
        "api:create_app()",
    ],  # fmt: skip
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_process_stops_with_one_line(tmp_path, entry):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CLIPTEXT_DATA_DIR": str(tmp_path),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing may be reached before the settings are read
        "CLIPTEXT_MAX_AUDIO_SECONDS": "nan",
    }
    done = subprocess.run(ENTRY_POINTS[entry], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "configuration error: CLIPTEXT_MAX_AUDIO_SECONDS must be a finite number greater than 0, got 'nan'"
        in done.stderr
    )
