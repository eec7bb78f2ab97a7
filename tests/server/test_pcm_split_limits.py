"""Raw PCM transcribed channel by channel counts every channel's seconds against the limit, as an
encoded file does (32 channels of 11 s had passed a 30 s limit: 64 segments, 14 s of decoding)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.audio_upload import AudioFormat, AudioLimits, received_audio
from inference.types import EngineError

LIMITS = AudioLimits(max_bytes=64 * 1024 * 1024, max_seconds=30.0)


def pcm(channels: int, seconds: float, rate: int = 16000) -> bytes:
    return np.zeros((int(seconds * rate), channels), dtype=np.int16).tobytes()


def chunks(data: bytes, size: int = 65536):
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("announced", [True, False])
def test_split_pcm_counts_every_channel(announced: bool) -> None:
    data = pcm(8, 11.0)
    fmt = AudioFormat("s16le", 16000, 8, len(data) if announced else 0)
    with pytest.raises(EngineError) as raised, received_audio(chunks(data), fmt, LIMITS, mix=False):
        pass
    assert raised.value.code == "AUDIO_TOO_LONG"
    with received_audio(chunks(data), fmt, LIMITS, mix=True) as audio:  # mixed: 11 s
        assert audio.shape == (11 * 16000,)
    two = pcm(2, 15.0)  # 2 x 15 s: exactly the limit
    with received_audio(chunks(two), AudioFormat("s16le", 16000, 2, len(two)), LIMITS, mix=False) as audio:
        assert audio.shape == (2, 15 * 16000)


@pytest.mark.parametrize("kind", ["encoded", "s16le"])
def test_more_bytes_than_announced_are_refused_when_they_come_not_at_the_end(kind: str) -> None:
    """A client that announced 100 KB and sends 60 MB was read to the last byte before the mismatch."""
    sent: list[int] = []

    def endless():
        while True:
            sent.append(65536)
            yield bytes(65536)

    fmt = AudioFormat(kind, 16000 if kind == "s16le" else 0, 1 if kind == "s16le" else 0, 100_000)
    with pytest.raises(EngineError) as raised, received_audio(endless(), fmt, LIMITS, mix=True):
        pass
    assert raised.value.code == "UPLOAD_SIZE_MISMATCH"
    assert "announced 100000 bytes but received more than 100000" in raised.value.message
    assert sum(sent) <= 2 * 65536
