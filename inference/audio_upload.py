"""Receives the audio of one call into what the engine reads, enforcing the byte and duration limits.

Encoded audio is spooled to a temporary file (the engine then decodes it window by window);
raw PCM is gathered in memory and converted to float32 16 kHz.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from cliptext.errors import ErrorCode
from inference.audio import probe_media
from inference.pcm import bytes_per_frame, pcm_to_float32
from inference.types import AudioError, EngineError


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class AudioFormat:
    """What the bytes are: "encoded", "s16le" or "f32le" (+ rate and channels for PCM)."""

    kind: str
    sample_rate: int = 0
    channels: int = 0
    total_bytes: int = 0  # announced by the client; 0 = unknown

    @property
    def is_pcm(self) -> bool:
        return self.kind != "encoded"

    def pcm_seconds(self, n_bytes: int, split: bool = False) -> float:
        """Seconds of PCM in `n_bytes`; split, of every channel together (each is transcribed)."""
        seconds = n_bytes / (bytes_per_frame(self.kind, self.channels) * self.sample_rate)
        return seconds * self.channels if split else seconds


def too_large(message: str) -> EngineError:
    return EngineError(ErrorCode.PAYLOAD_TOO_LARGE, message)


def too_long(seconds: float, limits: AudioLimits) -> EngineError:
    return EngineError(
        ErrorCode.AUDIO_TOO_LONG, f"audio is {seconds:.1f} s, over the limit of {limits.max_seconds:.0f} s"
    )


def check_announced(fmt: AudioFormat, limits: AudioLimits, split: bool = False) -> None:
    """Refuse before receiving anything when the announced size is already over a limit."""
    if fmt.total_bytes > limits.max_bytes:
        raise too_large(f"announced {fmt.total_bytes} bytes, over the limit of {limits.max_bytes}")
    if fmt.is_pcm and fmt.total_bytes and fmt.pcm_seconds(fmt.total_bytes, split) > limits.max_seconds:
        raise too_long(fmt.pcm_seconds(fmt.total_bytes, split), limits)


def _counted(
    chunks: Iterable[bytes], fmt: AudioFormat, limits: AudioLimits, split: bool = False
) -> Iterator[bytes]:
    """The chunks, within the limits (split PCM: the seconds of every channel count)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limits.max_bytes:
            raise too_large(f"more than {limits.max_bytes} audio bytes")
        if fmt.is_pcm and fmt.pcm_seconds(received, split) > limits.max_seconds:
            raise too_long(fmt.pcm_seconds(received, split), limits)
        yield chunk
    if received == 0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "empty audio: no bytes received")
    if fmt.total_bytes and received != fmt.total_bytes:
        raise EngineError(
            ErrorCode.UPLOAD_SIZE_MISMATCH, f"announced {fmt.total_bytes} bytes but received {received}"
        )


@contextmanager
def received_audio(
    chunks: Iterable[bytes], fmt: AudioFormat, limits: AudioLimits, mix: bool
) -> Iterator[str | np.ndarray]:
    """Yield a temp file path (encoded) or a float32 16 kHz array (PCM) holding all the chunks."""
    check_announced(fmt, limits, split=not mix)
    if fmt.is_pcm:
        data = bytearray()
        for chunk in _counted(chunks, fmt, limits, split=not mix):
            data += chunk
        yield pcm_to_float32(data, fmt.kind, fmt.sample_rate, fmt.channels, mix=mix)
        return
    with tempfile.NamedTemporaryFile(prefix="cliptext-audio-", suffix=".bin") as spool:
        for chunk in _counted(chunks, fmt, limits):
            spool.write(chunk)
        spool.flush()
        declared = probe_media(spool.name).duration  # headers only: refuse long audio before decoding
        if declared is not None and declared > limits.max_seconds:
            raise too_long(declared, limits)
        yield spool.name
