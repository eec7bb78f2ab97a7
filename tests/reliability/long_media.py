"""Long recordings that weigh little: one block encoded once, its packets repeated for minutes or hours.

Used by the long-file tests (tests/reliability/test_long_audio.py) and bench/long_audio.py. Remuxing
packets is fast (2 h of Opus in ~2 s) where encoding hours of audio would take minutes.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf

from inference.audio import decode_audio
from tests.media import clip_path, encode_audio, silence

RATE = 16000


def flac_with_streaminfo(data: bytes, rate: int | None = None, total_samples: int | None = None) -> bytes:
    """A FLAC file with its STREAMINFO sample rate and/or total samples rewritten (20 and 36 bits)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must be the first block"
    packed = int.from_bytes(data[18:26], "big")  # rate(20) channels-1(3) bps-1(5) total(36)
    if rate is not None:
        packed = (packed & ((1 << 44) - 1)) | ((rate & 0xFFFFF) << 44)
    if total_samples is not None:
        packed = (packed & ~((1 << 36) - 1)) | (total_samples & ((1 << 36) - 1))
    return data[:18] + packed.to_bytes(8, "big") + data[26:]


def repeat_packets(source: Path, target: Path, seconds: float, container: str | None = None) -> Path:
    """Remux the audio packets of `source` again and again until `seconds`: hours of audio, encoded once.

    The output keeps `source`'s codec headers (a FLAC STREAMINFO then still declares the short length).
    """
    with av.open(str(source)) as inp:
        stream = inp.streams.audio[0]
        packets = [p for p in inp.demux(stream) if p.size]
        base = stream.time_base
        first = packets[0].pts
        span = packets[-1].pts + packets[-1].duration - first
        with av.open(str(target), "w", format=container) as out:
            copy = out.add_stream_from_template(stream)
            offset = 0
            while offset * base < seconds:
                for packet in packets:
                    again = av.Packet(bytes(packet))
                    again.pts = again.dts = packet.pts - first + offset
                    again.duration, again.time_base, again.stream = packet.duration, base, copy
                    out.mux(again)
                offset += span
    return target


def long_silence(folder: Path, ext: str, seconds: float, rate: int = 16000, honest: bool = True) -> Path:
    """`seconds` of digital silence, small on disk: one minute encoded, its packets repeated.

    A FLAC keeps the minute's STREAMINFO (it declares 60 s) unless `honest`, when its total is rewritten.
    """
    codec, container = {"flac": ("flac", None), "opus": ("libopus", "ogg"), "mp3": ("libmp3lame", None)}[ext]
    minute = encode_audio(folder / f"minute-{ext}.{ext}", silence(60.0, rate), rate, codec, container)
    label = "silence" if honest else "silence-declared-60s"
    target = repeat_packets(minute, folder / f"{label}-{int(seconds)}s.{ext}", seconds, container)
    if ext == "flac" and honest:
        with av.open(str(target)) as written:
            samples = sum(p.duration or 0 for p in written.demux(written.streams.audio[0]))
        target.write_bytes(flac_with_streaminfo(target.read_bytes(), total_samples=samples))
    minute.unlink()
    return target


def speech_block(seconds: float = 60.0, rate: int = RATE) -> np.ndarray:
    """jfk.flac, 4 s of silence, hotwords.mp3, then silence up to `seconds` (mono float32 at `rate`)."""
    parts = [
        decode_audio(clip_path("jfk.flac"), rate),
        silence(4.0, rate),
        decode_audio(clip_path("hotwords.mp3"), rate),
    ]
    speech = np.concatenate(parts)
    return np.concatenate([speech, silence(max(0.0, seconds - speech.shape[0] / rate), rate)])


def speech_then_silence(path: Path, seconds: float, rate: int = RATE) -> Path:
    """One speech block at the start, then digital silence to `seconds`: lossless (FLAC or WAV by suffix)."""
    speech = speech_block(0.0, rate)
    samples = np.concatenate([speech, silence(seconds - speech.shape[0] / rate, rate)])
    sf.write(str(path), samples, rate)
    return path


def repeated_speech(path: Path, seconds: float, block_seconds: float = 60.0) -> Path:
    """Speech then silence, every `block_seconds`, for `seconds`: Opus in Ogg (about 1 MB a minute)."""
    block = encode_audio(
        path.with_name(path.stem + "-block.opus"), speech_block(block_seconds, 48000), 48000, "libopus", "ogg"
    )
    repeat_packets(block, path, seconds, "ogg")
    block.unlink()
    return path
