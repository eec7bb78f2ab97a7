"""Long raw PCM is converted piece by piece into a temporary file and streamed, never held whole.

Gathered in memory and converted whole, 2 h of 16 kHz s16le raised the server's peak RSS by over 1 GB
(the bytes, then float32 copies); 4 h, the default limit, by twice that. Short PCM keeps the whole-array
conversion, and the streamed samples are the same as it gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from inference import audio_upload
from inference.audio import decode_audio
from inference.audio_upload import AudioFormat, AudioLimits, received_audio
from inference.client import Progress, TranscriberClient
from inference.pcm import pcm_to_float32
from inference.types import EngineError
from tests.server.conftest import ServerProcess

LONG_SECONDS = 2 * 3600
LIMITS = AudioLimits(max_bytes=1 << 31, max_seconds=4 * 3600)


def _peak_rss(pid: int) -> int:
    """VmHWM in bytes: the most memory the process ever held."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def _reset_peak_rss(pid: int) -> None:
    with contextlib.suppress(OSError):  # "5": VmHWM back to the current RSS (Linux 4.0+), past start-up
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _chunks(data: bytes, size: int = 65537) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_long_pcm_call_keeps_server_memory_bounded(launch: Callable[..., ServerProcess]) -> None:
    server = launch(
        "--max-concurrent", "1", "--max-audio-bytes", str(LIMITS.max_bytes),
        "--max-audio-seconds", str(LIMITS.max_seconds),
    )  # fmt: skip
    pid = server.process.pid
    _reset_peak_rss(pid)
    before = _peak_rss(pid)
    silence = bytes(LONG_SECONDS * 16000 * 2)
    with TranscriberClient(server.addr, timeout=120) as client:
        events = client.transcribe(
            silence, audio_format=AudioFormat("s16le", 16000, 1), request_id="long-pcm", beam_size=1
        )
        first = next(events)  # sent after the whole upload was read and the first pass over it
        events.close()  # cancels: decoding 240 windows is not what this measures
    assert isinstance(first, Progress) and first.total_seconds == pytest.approx(LONG_SECONDS)
    server.wait_for_log(r"request_id=long-pcm .*outcome=", timeout=60)
    growth = _peak_rss(pid) - before
    float32_bytes = LONG_SECONDS * 16000 * 4
    assert growth < float32_bytes / 4, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("kind", "rate", "channels", "mix"),
    [
        ("s16le", 16000, 1, True),
        ("f32le", 16000, 2, True),
        ("s16le", 44100, 2, False),
        ("f32le", 8000, 3, True),
    ],
)
def test_streamed_pcm_gives_the_whole_array_samples(
    monkeypatch: pytest.MonkeyPatch, kind: str, rate: int, channels: int, mix: bool
) -> None:
    monkeypatch.setattr(audio_upload, "IN_MEMORY_PCM_SECONDS", 1.0)
    rng = np.random.default_rng(0)
    shape = (int(rate * 2.7), channels)
    if kind == "s16le":
        data = rng.integers(-32768, 32767, shape, dtype=np.int16).astype("<i2").tobytes()
    else:
        data = (rng.standard_normal(shape) * 0.2).astype("<f4").tobytes()
    whole = pcm_to_float32(data, kind, rate, channels, mix=mix)
    with received_audio(_chunks(data), AudioFormat(kind, rate, channels, len(data)), LIMITS, mix) as path:
        assert isinstance(path, str)
        streamed = decode_audio(path, channels="mix" if mix else "split")
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (np.r_[np.zeros(40000), np.nan].astype("<f4").tobytes(), "f32le", "NaN"),
        (np.r_[np.zeros(40000), 2e3].astype("<f4").tobytes(), "f32le", "far outside"),
        (bytes(80001), "s16le", "whole number"),
    ],
)
def test_streamed_pcm_keeps_the_checks(
    monkeypatch: pytest.MonkeyPatch, data: bytes, kind: str, reason: str
) -> None:
    monkeypatch.setattr(audio_upload, "IN_MEMORY_PCM_SECONDS", 1.0)
    fmt = AudioFormat(kind, 16000, 1)
    with (
        pytest.raises(EngineError, match=reason) as raised,
        received_audio(_chunks(data), fmt, LIMITS, mix=True),
    ):
        pass
    assert raised.value.code == "AUDIO_DECODE_ERROR"


def test_streamed_pcm_accepts_what_the_whole_array_path_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values are checked at the sender's rate: a square wave just under the bound passes, though
    resampling rings 30% past it, which the decoder refused when it read the spooled file back."""
    monkeypatch.setattr(audio_upload, "IN_MEMORY_PCM_SECONDS", 1.0)
    t = np.arange(8000 * 3)
    data = (np.sign(np.sin(2 * np.pi * 440 * t / 8000)) * 990).astype("<f4").tobytes()
    assert np.abs(pcm_to_float32(data, "f32le", 8000, 1)).max() > 1e3  # accepted whole, overshoot and all
    with received_audio(_chunks(data), AudioFormat("f32le", 8000, 1, len(data)), LIMITS, mix=True) as path:
        streamed = decode_audio(path)
    assert streamed.shape[0] == 3 * 16000 and np.abs(streamed).max() <= 1e3
