"""Raw PCM bytes (s16le / f32le, any rate, interleaved channels) to the engine's float32 16 kHz input.

Lets callers that already hold decoded audio skip the container round trip.
"""

from __future__ import annotations

import numpy as np
import soxr

from cliptext.errors import ErrorCode
from inference.types import AudioError

SAMPLE_RATE = 16000
_DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def bytes_per_frame(sample_format: str, channels: int) -> int:
    return _DTYPES[sample_format].itemsize * channels


def pcm_to_float32(
    data: bytes | bytearray | memoryview,
    sample_format: str,
    sample_rate: int,
    channels: int,
    mix: bool = True,
) -> np.ndarray:
    """Decode interleaved PCM to float32 at 16 kHz: 1-D when mixed (or mono), else [channels, n].

    Raises AudioError(AUDIO_DECODE_ERROR) for an unknown format, a bad rate/channel count,
    a byte count that is not whole frames, or no samples at all.
    """
    if sample_format not in _DTYPES:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"unknown PCM format {sample_format!r}")
    if not 1000 <= sample_rate <= 384000:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"PCM sample_rate {sample_rate} out of range")
    if not 1 <= channels <= 32:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"PCM channels {channels} out of range")
    frame = bytes_per_frame(sample_format, channels)
    if len(data) == 0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "empty audio: no PCM samples received")
    if len(data) % frame:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"PCM byte count {len(data)} is not a whole number of {frame}-byte frames",
        )
    samples = np.frombuffer(data, dtype=_DTYPES[sample_format]).reshape(-1, channels)
    if sample_format == "s16le":
        audio = samples.astype(np.float32) / 32768.0
    else:
        audio = samples.astype(np.float32)
        if not np.isfinite(audio).all():
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "PCM f32le holds NaN or infinite samples")
    if mix or channels == 1:
        audio = audio.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    if audio.ndim == 2:
        audio = np.ascontiguousarray(audio.T)
    return audio
