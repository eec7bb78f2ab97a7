"""A server killed mid-call (SIGKILL, the OOM killer) leaves no copy of the caller's audio behind.

The audio of a call is spooled to a temporary file; a named one stayed in the temp folder for good when
the server died before the call ended, holding a customer's recording that nothing would ever remove.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from inference.stubs import pb2, pb2_grpc
from tests.media import clip_path
from tests.server.conftest import ROOT, START_TIMEOUT, ServerProcess, wait_serving

JFK = clip_path("jfk.flac").read_bytes()


def _spool_is_open(pid: int, tmp: Path) -> bool:
    """Whether the server holds a spool file of `tmp` open (named cliptext-*, or unnamed: '(deleted)')."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(tmp)) and ("cliptext-" in target or target.endswith("(deleted)")):
            return True
    return False


def _half_then_wait(
    audio_format: int, data: bytes, release: threading.Event
) -> Iterator[pb2.TranscribeRequest]:
    spec = pb2.AudioSpec(format=audio_format, sample_rate=16000, channels=1)
    yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(audio=spec))
    for start in range(0, len(data), 1024 * 1024):
        yield pb2.TranscribeRequest(audio=data[start : start + 1024 * 1024])
    release.wait(30)


def _killed_mid_call(tmp_path: Path, audio_format: int, data: bytes) -> list[str]:
    """Start a server whose temp folder is `tmp_path/tmp`, send it `data` and hold the call open, SIGKILL
    the server once it spools, and return the spool files left in the temp folder (other libraries keep
    files of their own there)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "CLIPTEXT_DATA_DIR": str(tmp_path)}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference.server", "--addr", "127.0.0.1:0", "--precision", "fp32",
             "--threads", "1", "--max-concurrent", "1"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = ServerProcess(process, 0, log_path)
    release = threading.Event()
    try:
        server.port = int(server.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)", START_TIMEOUT).group(1))
        wait_serving(server)
        channel = grpc.insecure_channel(server.addr)
        call = pb2_grpc.TranscriberStub(channel).Transcribe(_half_then_wait(audio_format, data, release))
        deadline = time.monotonic() + 30
        while not _spool_is_open(process.pid, tmp):
            assert time.monotonic() < deadline, f"the server never spooled the audio:\n{server.log()}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        call.cancel()
        channel.close()
    finally:
        release.set()
        server.stop()
    return sorted(name for name in os.listdir(tmp) if name.startswith("cliptext-"))


def test_no_encoded_audio_is_left_after_a_kill(tmp_path: Path) -> None:
    left = _killed_mid_call(tmp_path, pb2.AUDIO_FORMAT_ENCODED, JFK)
    assert left == [], f"the killed server left the caller's audio in the temp folder: {left}"


def test_no_long_pcm_is_left_after_a_kill(tmp_path: Path) -> None:
    """Over IN_MEMORY_PCM_SECONDS of PCM is converted into a spooled WAV file while it comes in."""
    pcm = bytes(16000 * 2 * 130)  # 130 s of s16le silence at 16 kHz
    left = _killed_mid_call(tmp_path, pb2.AUDIO_FORMAT_PCM_S16LE, pcm)
    assert left == [], f"the killed server left the caller's audio in the temp folder: {left}"
