"""Raw PCM to float32 16 kHz: formats, channels, resampling and the malformed cases."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from inference.audio import decode_audio
from inference.pcm import pcm_to_float32
from inference.types import AudioError
from tests.media import clip_path


def _interleave(channels: list[np.ndarray]) -> np.ndarray:
    return np.stack(channels, axis=1).reshape(-1)


def test_s16le_and_f32le_give_the_same_samples() -> None:
    rng = np.random.default_rng(0)
    ints = rng.integers(-32768, 32767, 16000, dtype=np.int16)
    from_s16 = pcm_to_float32(ints.astype("<i2").tobytes(), "s16le", 16000, 1)
    from_f32 = pcm_to_float32((ints / 32768.0).astype("<f4").tobytes(), "f32le", 16000, 1)
    assert from_s16.dtype == np.float32 and from_s16.shape == (16000,)
    np.testing.assert_allclose(from_s16, from_f32, atol=1e-7)


def test_stereo_mixes_or_splits() -> None:
    left = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    right = np.full(8000, 0.25, np.float32)
    data = _interleave([left, right]).astype("<f4").tobytes()
    mixed = pcm_to_float32(data, "f32le", 16000, 2, mix=True)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-7)
    split = pcm_to_float32(data, "f32le", 16000, 2, mix=False)
    assert split.shape == (2, 8000)
    np.testing.assert_allclose(split[1], right)


def test_resampled_jfk_matches_the_decoder() -> None:
    samples, rate = sf.read(clip_path("jfk.flac"), dtype="float32", always_2d=True)
    assert rate == 44100
    ours = pcm_to_float32(samples.astype("<f4").tobytes(), "f32le", rate, samples.shape[1])
    decoded = decode_audio(str(clip_path("jfk.flac")))
    assert abs(len(ours) - len(decoded)) <= 2
    n = min(len(ours), len(decoded))
    assert np.abs(ours[:n] - decoded[:n]).max() < 1e-3


@pytest.mark.parametrize(
    ("data", "fmt", "channels", "reason"),
    [
        (b"", "s16le", 1, "empty"),
        (b"\x00\x00\x00", "s16le", 1, "whole number"),
        (b"\x00" * 6, "f32le", 2, "whole number"),
        (np.array([np.nan], "<f4").tobytes(), "f32le", 1, "NaN"),
        (b"\x00\x00", "u8", 1, "unknown PCM format"),
    ],
)
def test_malformed_pcm_is_an_audio_error(data: bytes, fmt: str, channels: int, reason: str) -> None:
    with pytest.raises(AudioError, match=reason) as raised:
        pcm_to_float32(data, fmt, 16000, channels)
    assert raised.value.code == "AUDIO_DECODE_ERROR"
