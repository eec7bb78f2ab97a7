"""Test media made on the fly: real encodes (PyAV, soundfile) of the shared clips and of synthetic signals,
plus the broken and hostile inputs an upload may carry (truncated, random bytes, an image named .mp3...).

Nothing here is a mock: every file is a real container that FFmpeg has to open.
"""

from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

AUDIO_DIR = Path(
    os.environ.get("CLIPTEXT_TEST_AUDIO_DIR", Path(__file__).resolve().parents[2] / "shared/audio")
)
CLIPS = ("jfk.flac", "jfk.mp3", "stereo_diarization.wav", "multilingual.mp3", "hotwords.mp3")
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


def clip_path(name: str) -> Path:
    """A shared reference clip (see shared/audio/README.md)."""
    return AUDIO_DIR / name


def sine(seconds: float, rate: int = 16000, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def noise(seconds: float, rate: int = 16000, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.uniform(-1, 1, int(round(seconds * rate)))).astype(np.float32)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(round(seconds * rate)), np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    """`samples` [n] or [C, n] float in [-1, 1]; subtype e.g. PCM_16, PCM_U8, PCM_24, FLOAT."""
    data = samples if samples.ndim == 1 else samples.T
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def encode_audio(
    path: Path,
    samples: np.ndarray,
    rate: int,
    codec: str,
    container: str | None = None,
    video: str | None = None,
    video_seconds: float | None = None,
) -> Path:
    """Encode `samples` ([n] or [C, n] float32) with PyAV; `video` adds a small moving-picture track.

    `video_seconds` (default: the audio's length) sets how long the video track is.
    """
    samples = np.atleast_2d(np.asarray(samples, np.float32))
    n_channels = samples.shape[0]
    with av.open(str(path), "w", format=container) as out:
        audio = out.add_stream(codec, rate=rate, layout=_LAYOUTS[n_channels])
        picture = _add_video(out, video) if video else None
        frame_size = audio.codec_context.frame_size or 1024
        resampler = av.AudioResampler(
            format=audio.codec_context.format,
            layout=audio.codec_context.layout,
            rate=rate,
            frame_size=frame_size,
        )
        written = 0
        frames: list[av.AudioFrame | None] = []
        for start in range(0, samples.shape[1], 4096):
            block = np.ascontiguousarray(samples[:, start : start + 4096])
            frames.append(av.AudioFrame.from_ndarray(block, format="fltp", layout=_LAYOUTS[n_channels]))
            frames[-1].sample_rate = rate
        for frame in [*frames, None]:  # None flushes the resampler
            for converted in resampler.resample(frame):
                # timestamps in samples let the muxer write the encoder delay (edit list), as real files have
                converted.pts, converted.time_base = written, Fraction(1, rate)
                written += converted.samples
                out.mux(audio.encode(converted))
        out.mux(audio.encode(None))
        if picture is not None:
            seconds = samples.shape[1] / rate if video_seconds is None else video_seconds
            _write_video_frames(out, picture, seconds)
    return path


def write_video_only(
    path: Path, seconds: float = 2.0, codec: str = "mpeg4", container: str | None = None
) -> Path:
    """A video file without any audio track."""
    with av.open(str(path), "w", format=container) as out:
        picture = _add_video(out, codec)
        _write_video_frames(out, picture, seconds)
    return path


def write_mp4_with_video(path: Path, clip: str = "jfk.flac") -> Path:
    """An MP4 (mpeg4 video + AAC audio) carrying the shared `clip`'s sound."""
    samples, rate = sf.read(str(clip_path(clip)), dtype="float32", always_2d=True)
    return encode_audio(path, samples.T, rate, "aac", video="mpeg4")


def truncated_copy(source: Path, target: Path, keep: float = 0.5) -> Path:
    """The first `keep` fraction of the bytes of `source`, as an interrupted upload would leave them."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def random_bytes(size: int = 65536, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def png_bytes(width: int = 16, height: int = 16) -> bytes:
    """A valid grey PNG image (zlib + struct only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([128]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _add_video(out: av.container.OutputContainer, codec: str) -> av.VideoStream:
    stream = out.add_stream(codec, rate=Fraction(10))
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _write_video_frames(out: av.container.OutputContainer, stream: av.VideoStream, seconds: float) -> None:
    for index in range(max(1, int(round(seconds * 10)))):
        image = np.full((48, 64, 3), (index * 7) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
