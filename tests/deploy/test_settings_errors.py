"""A bad setting stops a process at once with one line naming the variable, never a traceback, and
never a limit that silently does not hold (CLIPTEXT_MAX_AUDIO_SECONDS=nan compared false: no limit)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    ("CLIPTEXT_UPLOAD_SLOT_LEASE", "0.5"),
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
    "flask CLI": [sys.executable, "-m", "flask", "--app", "api", "db", "upgrade"],
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


def test_an_empty_secret_key_file_is_refused(data_dir, monkeypatch):
    """A first start that died while writing it left it empty; URLs signed with "" anyone can forge."""
    monkeypatch.delenv("CLIPTEXT_SECRET_KEY", raising=False)
    (data_dir / "secret_key").write_text("")
    with pytest.raises(SettingsError, match="secret_key is empty"):
        Settings.from_env()


def test_a_first_start_that_cannot_write_the_key_leaves_none_behind(tmp_path):
    """A full disk (here: a file-size limit of 0) fails the start; the next start makes a whole key."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPTEXT_DATA_DIR": str(tmp_path)}
    env.pop("CLIPTEXT_SECRET_KEY", None)
    failed = subprocess.run(
        [sys.executable, "-c", LIMITED_START], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode != 0
    assert list(tmp_path.iterdir()) == []  # neither an empty key nor a staged one
    started = subprocess.run(
        [sys.executable, "-c", PRINT_KEY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert len(started.stdout.strip()) >= 48


def test_processes_starting_together_share_one_key(tmp_path):
    """Eight processes released at once on a fresh folder: one key, whole, for all of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLIPTEXT_SECRET_KEY", None)
    for round_ in range(3):
        folder = tmp_path / f"round{round_}"
        go = tmp_path / f"go{round_}"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", GATED_PRINT_KEY, str(go)],
                cwd=ROOT,
                env={**env, "CLIPTEXT_DATA_DIR": str(folder)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        time.sleep(1.5)  # every child imported and waiting
        go.touch()
        keys = set()
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            keys.add(out.strip())
        assert len(keys) == 1 and len(keys.pop()) >= 48
        assert sorted(p.name for p in folder.iterdir()) == ["secret_key"]


LIMITED_START = """
import resource
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
from cliptext.settings import Settings
Settings.from_env()
"""
PRINT_KEY = "from cliptext.settings import Settings; print(Settings.from_env().secret_key)"
GATED_PRINT_KEY = """
import os, sys, time
from cliptext.settings import Settings
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
print(Settings.from_env().secret_key)
"""
