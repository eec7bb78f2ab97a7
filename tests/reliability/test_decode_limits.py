"""inference.audio against files that lie: a length limit checked on the decoded samples themselves,
and 64-bit PCM (a format PyAV cannot convert to numpy) decoded instead of raising ValueError."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from inference.audio import MIN_SAMPLE_RATE, decode_audio, iter_audio_chunks, probe_media
from inference.types import AudioError
from tests.media import sine
from tests.reliability.hostile import wav_bytes
from tests.reliability.long_media import long_silence


def test_64_bit_pcm_wav_is_decoded(tmp_path: Path) -> None:
    expected = sine(0.5)
    path = tmp_path / "s64.wav"
    path.write_bytes(
        wav_bytes((expected.astype(np.float64) * 2**63 * 0.999).astype("<i8").tobytes(), bits=64)
    )
    audio = decode_audio(path)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected * 0.999, atol=1e-6)


@pytest.fixture(scope="module")
def understated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 h of silence in a FLAC whose STREAMINFO says 60 s."""
    return long_silence(tmp_path_factory.mktemp("flac"), "flac", 3 * 3600.0, honest=False)


def test_a_length_limit_stops_decoding_a_file_whose_header_understates_it(understated: Path) -> None:
    assert probe_media(understated).duration == pytest.approx(60.0)
    started = time.monotonic()
    with pytest.raises(AudioError) as refused:
        decode_audio(understated, max_seconds=120.0)
    assert refused.value.code == "AUDIO_TOO_LONG"
    assert time.monotonic() - started < 10.0
    yielded = 0
    with pytest.raises(AudioError, match="longer than the limit"):
        for _ in iter_audio_chunks(understated, chunk_seconds=30.0, max_seconds=120.0):
            yielded += 1
    assert yielded in (3, 4)  # up to 120 s, not a window more


def test_an_array_over_the_limit_is_refused() -> None:
    audio = decode_audio(sine(2.0), max_seconds=2.5)
    assert audio.shape == (32000,)
    with pytest.raises(AudioError):
        decode_audio(sine(3.0), max_seconds=2.5)


def test_a_sample_rate_too_low_for_a_recording_is_refused_before_decoding(tmp_path: Path) -> None:
    """A WAV header saying 7 Hz makes 32 KB of samples last 40 minutes: refused at the probe."""
    pcm = (sine(1.0) * 32767).astype("<i2").tobytes()
    path = tmp_path / "7hz.wav"
    path.write_bytes(wav_bytes(pcm, rate=7))
    for read in (probe_media, decode_audio):
        with pytest.raises(AudioError, match="sample rate of 7 Hz"):
            read(path)
    path.write_bytes(wav_bytes(pcm, rate=MIN_SAMPLE_RATE))
    assert probe_media(path).duration == pytest.approx(16000 / MIN_SAMPLE_RATE)
