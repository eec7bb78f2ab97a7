"""Raw PCM bytes (s16le / f32le, any rate, interleaved channels) to the engine's float32 16 kHz input.

Lets callers that already hold decoded audio skip the container round trip.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from cliptext.errors import ErrorCode
from inference.types import AudioError

SAMPLE_RATE = 16000
# what raw PCM may declare (the gRPC contract); MAX_CHANNELS is also the most channels="split" transcribes
MIN_PCM_RATE, MAX_PCM_RATE = 1000, 384000
MAX_CHANNELS = 32
_DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
# Decoded audio lives in [-1, 1]; lossy decoders overshoot by a few percent and float files mixed
# "hot" may peak at +24 dBFS (16), so 1e3 (+60 dBFS) is never reached by real audio and is far below
# where the log-mel power (about 4e4 x^2 per bin) overflows float32 (x near 1e16). A float file written
# at integer scale (+/-32768) is refused too: the model would hear it 90 dB too loud, and FFmpeg-based
# tools clip it to a square wave. Values are only checked, never clipped: valid audio stays bit-exact.
MAX_SAMPLE_MAGNITUDE = 1e3


def bytes_per_frame(sample_format: str, channels: int) -> int:
    return _DTYPES[sample_format].itemsize * channels


def check_sample_values(samples: np.ndarray, what: str) -> None:
    """Refuse NaN, infinite or absurdly large samples, which would turn the features into NaN later.

    Two reductions and no copy (min/max propagate NaN), so it is cheap enough for every decoded block.
    """
    if samples.size == 0:
        return
    low, high = float(samples.min()), float(samples.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"{what} holds NaN or infinite samples")
    peak = max(-low, high)
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"{what} holds samples far outside [-1, 1] (peak {peak:.3g}, at most"
            f" {MAX_SAMPLE_MAGNITUDE:g} accepted): corrupt, or not scaled as audio",
        )


def check_pcm_format(sample_format: str, sample_rate: int, channels: int) -> None:
    """Refuse a format, rate or channel count that no conversion below can take (AUDIO_DECODE_ERROR)."""
    if sample_format not in _DTYPES:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"unknown PCM format {sample_format!r}")
    if not MIN_PCM_RATE <= sample_rate <= MAX_PCM_RATE:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"PCM sample_rate {sample_rate} out of range")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"PCM channels {channels} out of range")


def _not_whole_frames(n_bytes: int, frame: int) -> AudioError:
    return AudioError(
        ErrorCode.AUDIO_DECODE_ERROR, f"PCM byte count {n_bytes} is not a whole number of {frame}-byte frames"
    )


def _frames_to_float(
    data: bytes | bytearray | memoryview, sample_format: str, channels: int, mix: bool
) -> np.ndarray:
    """Whole frames to float32 at their own rate: [n] mixed (or mono), else [n, channels].

    Each frame is mixed on its own (a mean over its row), so converting in pieces gives the same samples.
    """
    samples = np.frombuffer(data, dtype=_DTYPES[sample_format]).reshape(-1, channels)
    if sample_format == "s16le":
        audio = samples.astype(np.float32) / 32768.0
    else:
        audio = samples.astype(np.float32)
        check_sample_values(audio, "PCM f32le")
    if mix or channels == 1:
        audio = audio.mean(axis=1, dtype=np.float32)
    return audio


def pcm_to_float32(
    data: bytes | bytearray | memoryview,
    sample_format: str,
    sample_rate: int,
    channels: int,
    mix: bool = True,
) -> np.ndarray:
    """Decode interleaved PCM to float32 at 16 kHz: 1-D when mixed (or mono), else [channels, n].

    Raises AudioError(AUDIO_DECODE_ERROR) for an unknown format, a bad rate/channel count,
    a byte count that is not whole frames, no samples at all, or f32le samples that are NaN, infinite
    or far outside [-1, 1].
    """
    check_pcm_format(sample_format, sample_rate, channels)
    frame = bytes_per_frame(sample_format, channels)
    if len(data) == 0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "empty audio: no PCM samples received")
    if len(data) % frame:
        raise _not_whole_frames(len(data), frame)
    audio = _frames_to_float(data, sample_format, channels, mix)
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    if audio.ndim == 2:
        audio = np.ascontiguousarray(audio.T)
    return audio


class PcmStream:
    """`pcm_to_float32` piece by piece, for PCM too long to hold: bytes in, float32 16 kHz out.

    Output is interleaved ([n] mixed or mono, else [n, channels]) so it can be written to a file as is.
    Frames are mixed one by one and soxr's streaming resampler gives what its one-shot call does, so the
    samples match the whole-array conversion; only a partial frame's bytes are kept between pieces.
    """

    def __init__(self, sample_format: str, sample_rate: int, channels: int, mix: bool = True):
        check_pcm_format(sample_format, sample_rate, channels)
        self._format, self._channels, self._mix = sample_format, channels, mix
        self._frame = bytes_per_frame(sample_format, channels)
        self.out_channels = 1 if mix else channels
        self._pending = b""
        self._received = 0
        self._resampler = None
        if sample_rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                sample_rate, SAMPLE_RATE, self.out_channels, dtype="float32", quality="HQ"
            )

    def push(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """The samples of every whole frame received so far that were not returned yet."""
        self._received += len(data)
        if self._pending:
            data = self._pending + bytes(data)
        whole = len(data) - len(data) % self._frame
        self._pending = bytes(data[whole:])
        audio = _frames_to_float(memoryview(data)[:whole], self._format, self._channels, self._mix)
        if self._resampler is not None:
            audio = _within_checked_range(self._resampler.resample_chunk(audio))
        return audio

    def finish(self) -> np.ndarray:
        """The resampler's last samples; refuses empty input and a byte count that is not whole frames."""
        if self._received == 0:
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "empty audio: no PCM samples received")
        if self._pending:
            raise _not_whole_frames(self._received, self._frame)
        empty = np.zeros((0,) if self.out_channels == 1 else (0, self.out_channels), np.float32)
        if self._resampler is None:
            return empty
        return _within_checked_range(self._resampler.resample_chunk(empty, last=True))


def _within_checked_range(resampled: np.ndarray) -> np.ndarray:
    """The samples were checked at their own rate; the resampler may overshoot absurd ones (a square wave
    near MAX_SAMPLE_MAGNITUDE rings 30% past it), which the decoder would refuse when it reads the spooled
    file back, though the same audio sent short is accepted. Valid audio never comes near the bound."""
    return np.clip(resampled, -MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE, out=resampled)
