"""Receives the audio of one call into what the engine reads, enforcing the byte and duration limits.

Encoded audio is spooled to a temporary file (the engine then decodes it window by window). Short raw PCM
is gathered in memory and converted to float32 16 kHz whole; longer PCM is converted piece by piece into a
float32 16 kHz WAV file, which the engine then streams like an encoded file (4 h of PCM held whole in
memory took over 1 GB).
"""

from __future__ import annotations

import itertools
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import numpy as np

from cliptext.errors import ErrorCode
from inference.audio import probe_media
from inference.pcm import SAMPLE_RATE, PcmStream, bytes_per_frame, pcm_to_float32
from inference.types import AudioError, EngineError

# PCM up to this long (and this large) is converted whole in memory, as it always was: the engine decodes
# files up to inference.transcribe.STREAM_MIN_SECONDS whole anyway, and short calls skip the file.
# Split, the seconds of every channel count: the array is held from the upload on, while the call waits
# for its turn, and 32 channels of 119 s at 1 kHz (a 7.6 MB upload) made 245 MB of float32 samples.
IN_MEMORY_PCM_SECONDS = 120.0
IN_MEMORY_PCM_BYTES = 16 * 1024 * 1024
# PCM is converted into the spool this many bytes at a time: at 1 kHz each s16le byte becomes 32 bytes of
# float32 16 kHz, so converting a whole 4 MiB message at once took 128 MiB
_PIECE_BYTES = 64 * 1024
_WAV_HEADER_BYTES = 44
_WAV_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # over 4 GB: FFmpeg then reads the data chunk to the end of the file


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


def _pcm_too_long(
    fmt: AudioFormat, n_bytes: int, limits: AudioLimits, split: bool, whole: bool
) -> EngineError:
    """AUDIO_TOO_LONG for PCM. `whole`: all of it was announced; else only what came before the refusal
    is known, so the message says "more than" the limit (a 40 s upload read "audio is 32.8 s")."""
    seconds = fmt.pcm_seconds(n_bytes, split)
    limit = f"the limit of {limits.max_seconds:.0f} s"
    if split and fmt.channels > 1:  # every channel is transcribed, so every channel's seconds count
        counted = f"{seconds / fmt.channels:.1f} s x {fmt.channels} channels = {seconds:.1f} s"
        if whole:
            message = f"audio is {counted} (split: every channel counts), over {limit}"
        else:
            message = f"more than {limit} of audio (split: every channel counts; refused after {counted})"
    elif whole:
        message = f"audio is {seconds:.1f} s, over {limit}"
    else:
        message = f"more than {limit} of audio (refused after receiving {seconds:.1f} s)"
    return EngineError(ErrorCode.AUDIO_TOO_LONG, message)


def check_announced(fmt: AudioFormat, limits: AudioLimits, split: bool = False) -> None:
    """Refuse before receiving anything when the announced size is already over a limit."""
    if fmt.total_bytes > limits.max_bytes:
        raise too_large(f"announced {fmt.total_bytes} bytes, over the limit of {limits.max_bytes}")
    if fmt.is_pcm and fmt.total_bytes and fmt.pcm_seconds(fmt.total_bytes, split) > limits.max_seconds:
        raise _pcm_too_long(fmt, fmt.total_bytes, limits, split, whole=True)


def _counted(
    chunks: Iterable[bytes], fmt: AudioFormat, limits: AudioLimits, split: bool = False
) -> Iterator[bytes]:
    """The chunks, within the limits (split PCM: the seconds of every channel count)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limits.max_bytes:
            raise too_large(f"more than {limits.max_bytes} audio bytes")
        if fmt.total_bytes and received > fmt.total_bytes:  # known now: refused without reading the rest
            raise _size_mismatch(fmt.total_bytes, f"more than {fmt.total_bytes}")
        if fmt.is_pcm and fmt.pcm_seconds(received, split) > limits.max_seconds:
            raise _pcm_too_long(fmt, received, limits, split, whole=False)
        yield chunk
    if received == 0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "empty audio: no bytes received")
    if fmt.total_bytes and received != fmt.total_bytes:
        raise _size_mismatch(fmt.total_bytes, str(received))


def _size_mismatch(announced: int, received: str) -> EngineError:
    return EngineError(ErrorCode.UPLOAD_SIZE_MISMATCH, f"announced {announced} bytes but received {received}")


@contextmanager
def received_audio(
    chunks: Iterable[bytes], fmt: AudioFormat, limits: AudioLimits, mix: bool
) -> Iterator[str | np.ndarray]:
    """Yield a temp file path (encoded, long PCM) or a float32 16 kHz array (short PCM) of all the chunks.

    Short PCM is converted whole (the same samples as ever, no file); longer PCM is converted while it is
    received into a float32 16 kHz WAV file, so neither its bytes nor its samples are ever held whole.
    """
    check_announced(fmt, limits, split=not mix)
    if fmt.is_pcm:
        received = _counted(chunks, fmt, limits, split=not mix)
        head, complete = _short_head(received, fmt, split=not mix)
        if complete:
            audio = pcm_to_float32(head, fmt.kind, fmt.sample_rate, fmt.channels, mix=mix)
            del head  # the call holds its samples until it ends, not its bytes too
            yield audio
            return
        with spooled("cliptext-pcm-") as (spool, path):
            _write_float_wav(
                spool, head, received, PcmStream(fmt.kind, fmt.sample_rate, fmt.channels, mix=mix)
            )
            del head
            yield path
        return
    with spooled("cliptext-audio-") as (spool, path):
        for chunk in _counted(chunks, fmt, limits):
            spool.write(chunk)
        spool.flush()
        declared = probe_media(path).duration  # headers only: refuse long audio before decoding
        if declared is not None and declared > limits.max_seconds:
            raise too_long(declared, limits)
        yield path


@contextmanager
def spooled(prefix: str) -> Iterator[tuple[IO[bytes], str]]:
    """A temporary file for a call's audio and a path this process can open it by.

    On Linux the file has no name (`TemporaryFile`) and is opened through /proc/self/fd: a server killed
    mid-call (SIGKILL, the OOM killer) leaves nothing, where a named file kept a customer's recording in
    /tmp for good. Elsewhere, a named file removed when the call ends.
    """
    with tempfile.TemporaryFile(prefix=prefix) as spool:
        path = f"/proc/self/fd/{spool.fileno()}"
        if os.path.exists(path):
            yield spool, path
            return
    with tempfile.NamedTemporaryFile(prefix=prefix) as spool:
        yield spool, spool.name


def _short_head(received: Iterator[bytes], fmt: AudioFormat, split: bool) -> tuple[bytearray, bool]:
    """(the bytes, True) when all of the PCM is short enough to convert whole (`split`: its channels'
    seconds together); else (the first bytes, False), the rest still in `received`."""
    head = bytearray()
    for chunk in received:
        head += chunk
        if len(head) > IN_MEMORY_PCM_BYTES or fmt.pcm_seconds(len(head), split) > IN_MEMORY_PCM_SECONDS:
            return head, False
    return head, True


def _write_float_wav(spool: IO[bytes], head: bytearray, rest: Iterator[bytes], stream: PcmStream) -> None:
    """Convert `head` then every chunk of `rest` into `spool`, a float32 16 kHz WAV file."""
    spool.write(bytes(_WAV_HEADER_BYTES))  # filled in once the size is known
    for chunk in itertools.chain((head,), rest):
        for start in range(0, len(chunk), _PIECE_BYTES):
            _write_samples(spool, stream.push(memoryview(chunk)[start : start + _PIECE_BYTES]))
    _write_samples(spool, stream.finish())
    size = spool.tell() - _WAV_HEADER_BYTES
    spool.seek(0)
    spool.write(_float_wav_header(size, stream.out_channels))
    spool.flush()


def _write_samples(spool: IO[bytes], samples: np.ndarray) -> None:
    spool.write(np.ascontiguousarray(samples, dtype="<f4").data)


def _float_wav_header(data_bytes: int, channels: int) -> bytes:
    """A canonical 44-byte header for float32 16 kHz samples (a size over 4 GB is written as unknown)."""
    block = 4 * channels
    fits = data_bytes + 36 < _WAV_UNKNOWN_SIZE
    data, riff = (data_bytes, data_bytes + 36) if fits else (_WAV_UNKNOWN_SIZE, _WAV_UNKNOWN_SIZE)
    layout = (_WAV_FLOAT, channels, SAMPLE_RATE, SAMPLE_RATE * block, block, 32)
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, *layout, b"data", data)
