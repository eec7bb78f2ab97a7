"""The inference server's INTERNAL-error line carries the call's request id in its JSON field.

A real server whose files may not grow past 16 KiB (RLIMIT_FSIZE: spooling the upload fails with
EFBIG, an error of the machine, answered INTERNAL); its log goes through a pipe, which the limit spares.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from inference.client import TranscriberClient
from tests.jobs.stack import ROOT, Proc, Stack, free_port
from tests.media import AUDIO_DIR


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))


def test_the_internal_error_line_carries_the_request_id(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CLIPTEXT_LOG_FORMAT": "json",
        "CLIPTEXT_MODEL_DIR": str(model_dir),
        "CLIPTEXT_INFERENCE_METRICS_PORT": "0",
        "TMPDIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "inference.server", "--addr", f"127.0.0.1:{port}"]
    command += ["--model-dir", str(model_dir), "--precision", "fp32", "--threads", "1"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_small_files,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in process.stdout))
    reader.start()
    stack = Stack(tmp=tmp_path, env=env, model_dir=model_dir, inference_port=port, api_port=0)
    stack.inference = Proc("inference", process, tmp_path / "unused.log")
    (tmp_path / "unused.log").write_text("")
    try:
        stack.wait_inference_serving()
        with TranscriberClient(f"127.0.0.1:{port}") as client, pytest.raises(Exception) as raised:
            list(client.transcribe(str(AUDIO_DIR / "jfk.mp3"), request_id="obs-internal-7", timeout=30))
        assert "INTERNAL" in str(getattr(raised.value, "code", raised.value)), raised.value
        time.sleep(0.5)
    finally:
        stack.inference.stop()
        stack.redis.close()
        reader.join(10)
        process.stdout.close()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    errors = [e for e in entries if e["level"] == "ERROR"]
    assert errors, lines
    assert all(e["request_id"] == "obs-internal-7" for e in errors), errors
    assert any("File too large" in (e.get("exc") or "") for e in errors), errors
