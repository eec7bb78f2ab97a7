"""Hostile uploads made on the fly: what a careless or malicious client may send as "audio".

`hostile_cases(folder)` writes 200+ files into `folder` (deterministic: seeded) and describes each:
empty files, random bytes behind real magic numbers, the shared clips truncated and bit-flipped at
many offsets, headers that lie about sizes and rates, images and text named as audio, video without
sound, odd but valid audio (8 channels, 8-bit, 192 kHz, 50 ms, silence) and hours of silence that
weigh little on disk. Every file is bytes a real client could upload; nothing is mocked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from api.media import ALLOWED_EXTENSIONS
from inference.audio import decode_audio
from tests.media import (
    clip_path,
    encode_audio,
    noise,
    png_bytes,
    random_bytes,
    silence,
    sine,
    write_video_only,
    write_wav,
)
from tests.reliability.long_media import flac_with_streaminfo, long_silence

# magic numbers of the containers we accept, with the extension a client would give them
MAGICS: dict[str, tuple[bytes, str]] = {
    "riff": (b"RIFF\x24\x00\x01\x00WAVEfmt ", "wav"),
    "flac": (b"fLaC\x00\x00\x00\x22", "flac"),
    "id3": (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
    "ogg": (b"OggS\x00\x02" + bytes(20), "ogg"),
    "ftyp": (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "m4a"),
    "ebml": (b"\x1a\x45\xdf\xa3", "webm"),
    "mpeg": (b"\xff\xfb\x90\x64", "mp3"),
}


@dataclass(frozen=True)
class HostileCase:
    """One file to upload; `seconds` is how much audio it may really hold (bounds the time it may take)."""

    name: str
    path: Path
    seconds: float = 0.0

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def content_type(self) -> str:
        ext = self.path.suffix.lower().lstrip(".")
        return ALLOWED_EXTENSIONS.get(ext, ("application/octet-stream",))[0]


def speech(seconds: float, rate: int = 16000) -> np.ndarray:
    """The first `seconds` of jfk.flac at `rate`: real speech (a pure tone or noise makes the model loop
    through its temperature fallback, ~30 s a window on a busy CPU; the suite keeps two such files)."""
    return decode_audio(clip_path("jfk.flac"), rate)[: int(round(seconds * rate))]


def wav_bytes(
    pcm: bytes,
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    riff_size: int | None = None,
    data_size: int | None = None,
    format_tag: int = 1,
    byte_rate: int | None = None,
) -> bytes:
    """A WAV file whose header fields may lie (None = the true value)."""
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH",
        format_tag,
        channels,
        rate,
        (rate * block if byte_rate is None else byte_rate) & 0xFFFFFFFF,
        block & 0xFFFF,
        bits,
    )
    data_len = len(pcm) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_len) + pcm
    size = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", size & 0xFFFFFFFF) + body


def flip_bits(data: bytes, offsets: list[int], seed: int) -> bytes:
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    for offset in offsets:
        out[offset % len(out)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def hostile_cases(folder: Path) -> list[HostileCase]:
    """Write every hostile file into `folder` and describe them (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[HostileCase] = []

    def add(name: str, filename: str, data: bytes, seconds: float = 0.0) -> None:
        path = folder / f"{len(cases):03d}-{filename}"
        path.write_bytes(data)
        cases.append(HostileCase(name, path, seconds))

    def add_path(name: str, path: Path, seconds: float) -> None:
        cases.append(HostileCase(name, path, seconds))

    # empty files under every accepted name
    for ext in ("mp3", "wav", "flac", "ogg", "opus", "m4a", "mp4", "webm", "mkv", "aac"):
        add("zero bytes", f"empty.{ext}", b"")
    # random bytes: bare, and behind each magic number, at a few sizes
    for seed, size in enumerate((1, 7, 512, 4096, 65536)):
        add("random bytes", f"random{seed}.mp3", random_bytes(size, seed))
    for seed, ext in enumerate(("wav", "flac", "ogg", "m4a", "webm", "mov"), start=50):
        add("random bytes", f"random{seed}.{ext}", random_bytes(8192, seed))
    for index, (magic, (prefix, ext)) in enumerate(MAGICS.items()):
        for seed, size in enumerate((4, 16, 1024, 32768)):
            add(
                f"random behind {magic} magic",
                f"magic-{magic}-{size}.{ext}",
                prefix + random_bytes(size, 100 + 10 * index + seed),
            )
    # the shared clips truncated at many offsets (header-only cuts, mid-stream cuts, one byte short)
    clip_seconds = {"jfk.flac": 11.0, "jfk.mp3": 11.0, "stereo_diarization.wav": 5.0, "hotwords.mp3": 4.0}
    for clip, seconds in clip_seconds.items():
        data = clip_path(clip).read_bytes()
        cuts = [1, 4, 12, 44, 100, 400, 1500, 4096, 9000]
        cuts += [int(len(data) * f) for f in (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9)]
        for cut in sorted(set(cuts)) + [len(data) - 1]:
            add(f"truncated {Path(clip).suffix[1:]}", f"cut{cut}-{clip}", data[:cut], seconds)
    # the shared clips with bits flipped: in the header, spread over the data, and a burst
    for clip, seconds in clip_seconds.items():
        data = clip_path(clip).read_bytes()
        n = len(data)
        plans = {
            "header": [4, 8, 20, 30],
            "early": list(range(64, 256, 17)),
            "spread": list(range(n // 7, n, n // 7)),
            "burst": list(range(n // 2, n // 2 + 400)),
            "many": list(range(0, n, max(1, n // 200))),
        }
        if seconds > 5.0:  # the 11 s clips: fewer of the flips that still decode (each is transcribed)
            plans = {k: plans[k] for k in ("header", "burst", "many")}
        for label, offsets in plans.items():
            add(
                f"bit flips ({label}) {Path(clip).suffix[1:]}",
                f"flip-{label}-{clip}",
                flip_bits(data, offsets, n),
                seconds,
            )
        for seed in range(3 if seconds <= 5.0 else 1):  # random single flips anywhere
            offset = int(np.random.default_rng(seed).integers(0, n))
            add(
                f"bit flips (one) {Path(clip).suffix[1:]}",
                f"flip1-{seed}-{clip}",
                flip_bits(data, [offset], seed),
                seconds,
            )
    # a longer clip cut mid-stream (the truncation is found after decoding what is there)
    data = clip_path("multilingual.mp3").read_bytes()
    for fraction in (0.1, 0.25, 0.5, 0.75):
        add(
            "truncated mp3 (long)", f"cut{fraction}-multilingual.mp3", data[: int(len(data) * fraction)], 60.0
        )
    # headers that lie
    pcm = (speech(1.0) * 32767).astype("<i2").tobytes()
    lies = {
        "data size too large": wav_bytes(pcm, data_size=10**9),
        "data size 0xFFFFFFFF": wav_bytes(pcm, data_size=0xFFFFFFFF),
        "data size too small": wav_bytes(pcm, data_size=100),
        "data size zero": wav_bytes(pcm, data_size=0),
        "riff size zero": wav_bytes(pcm, riff_size=0),
        "riff size huge": wav_bytes(pcm, riff_size=0xFFFFFFF0),
        "rate zero": wav_bytes(pcm, rate=0),
        "rate one": wav_bytes(pcm, rate=1),
        "rate 4 GHz": wav_bytes(pcm, rate=0xFFFFFFFF),
        "rate 7 Hz": wav_bytes(pcm, rate=7),
        "channels zero": wav_bytes(pcm, channels=0),
        "channels 65535": wav_bytes(pcm, channels=65535),
        "rate 2 Hz": wav_bytes(pcm, rate=2),
        "rate 3 Hz": wav_bytes(pcm, rate=3),
        "bits zero": wav_bytes(pcm, bits=0),
        "bits 3": wav_bytes(pcm, bits=3),
        "bits 64": wav_bytes(pcm, bits=64),
        "format tag 0x1234": wav_bytes(pcm, format_tag=0x1234),
        "format tag mu-law": wav_bytes(pcm, format_tag=7, bits=8),
        "byte rate zero": wav_bytes(pcm, byte_rate=0),
        "header only": wav_bytes(b""),
        "odd byte": wav_bytes(pcm + b"\x01"),
    }
    for label, data in lies.items():
        add(f"lying WAV: {label}", f"lie-{label.replace(' ', '-')}.wav", data, 1.0)
    flac = clip_path("jfk.flac").read_bytes()
    for label, fields in {
        "rate zero": {"rate": 0},
        "rate 1 Hz": {"rate": 1},
        "rate 655 kHz": {"rate": 655350},
        "total samples huge": {"total_samples": (1 << 36) - 1},
        "total samples zero": {"total_samples": 0},
        "total samples one": {"total_samples": 1},
    }.items():
        add(
            f"lying FLAC: {label}",
            f"lie-{label.replace(' ', '-')}.flac",
            flac_with_streaminfo(flac, **fields),
            11.0,
        )
    mp3 = clip_path("jfk.mp3").read_bytes()
    add("lying ID3 size", "lie-id3-size.mp3", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + mp3[10:], 11.0)
    add("ID3 tag alone", "id3-only.mp3", b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128))
    # images, text and other files named as audio
    add("PNG named .mp3", "image.mp3", png_bytes())
    add("PNG named .wav", "image.wav", png_bytes(64, 64))
    add("PNG named .png", "image.png", png_bytes())
    add("text named .flac", "notes.flac", b"ask not what your country can do for you\n" * 50)
    add("JSON named .ogg", "data.ogg", b'{"audio": "no"}')
    add("HTML named .m4a", "page.m4a", b"<!doctype html><html><body>audio</body></html>")
    add("SVG named .mp3", "drawing.mp3", b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')
    add("playlist named .mp3", "list.mp3", b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    add("concat list named .mp4", "list.mp4", b"ffconcat version 1.0\nfile /etc/passwd\n")
    add(
        "HLS named .aac",
        "stream.aac",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://10.0.0.1/a.ts\n",
    )
    add("shell script named .wav", "script.wav", b"#!/bin/sh\nrm -rf /\n")
    add("gzip named .mp3", "archive.mp3", b"\x1f\x8b\x08\x00" + random_bytes(2048, 7))
    add("zip named .m4a", "archive.m4a", b"PK\x03\x04" + random_bytes(2048, 8))
    add("executable named .ogg", "program.ogg", b"\x7fELF\x02\x01\x01" + bytes(57) + random_bytes(1024, 9))
    # video without audio
    for ext, codec in (("mp4", "mpeg4"), ("mkv", "mpeg4"), ("webm", "libvpx"), ("mov", "mpeg4")):
        add_path(
            "video without audio",
            write_video_only(folder / f"{len(cases):03d}-video-only.{ext}", 1.0, codec),
            1.0,
        )
    # unusual but valid audio
    odd = [
        (
            "8 channels WAV",
            lambda p: write_wav(p, np.stack([np.roll(speech(2.0), 800 * c) for c in range(8)]), 16000),
            "wav",
            2.0,
        ),
        (
            "8 channels FLAC",
            lambda p: write_wav(p, np.stack([noise(2.0, seed=c) for c in range(8)]), 16000),
            "flac",
            2.0,
        ),
        ("8-bit WAV", lambda p: write_wav(p, speech(2.0), 16000, "PCM_U8"), "wav", 2.0),
        ("24-bit WAV", lambda p: write_wav(p, speech(2.0), 16000, "PCM_24"), "wav", 2.0),
        ("float WAV", lambda p: write_wav(p, speech(2.0), 16000, "FLOAT"), "wav", 2.0),
        ("192 kHz WAV", lambda p: write_wav(p, speech(2.0, 192000), 192000), "wav", 2.0),
        ("192 kHz FLAC", lambda p: write_wav(p, speech(2.0, 192000), 192000), "flac", 2.0),
        ("8 kHz WAV", lambda p: write_wav(p, speech(2.0, 8000), 8000), "wav", 2.0),
        ("50 ms WAV", lambda p: write_wav(p, sine(0.05), 16000), "wav", 0.05),
        ("one sample WAV", lambda p: write_wav(p, sine(1 / 16000), 16000), "wav", 0.0),
        ("50 ms MP3", lambda p: encode_audio(p, sine(0.05), 16000, "libmp3lame"), "mp3", 0.05),
        (
            "50 ms Opus",
            lambda p: encode_audio(p, sine(0.05, rate=48000), 48000, "libopus", "ogg"),
            "opus",
            0.05,
        ),
        ("silence 10 s WAV", lambda p: write_wav(p, silence(10.0), 16000), "wav", 10.0),
        ("silence 10 s MP3", lambda p: encode_audio(p, silence(10.0), 16000, "libmp3lame"), "mp3", 10.0),
        ("noise 5 s FLAC", lambda p: write_wav(p, noise(5.0), 16000), "flac", 5.0),
        ("full-scale square WAV", lambda p: write_wav(p, np.sign(sine(3.0)), 16000), "wav", 3.0),
        ("ALAC in M4A", lambda p: encode_audio(p, speech(2.0), 16000, "alac", "mp4"), "m4a", 2.0),
        (
            "AAC in MKV",
            lambda p: encode_audio(p, speech(2.0, 44100), 44100, "aac", "matroska"),
            "mkv",
            2.0,
        ),
    ]
    for label, write, ext, seconds in odd:
        path = folder / f"{len(cases):03d}-{label.replace(' ', '-')}.{ext}"
        if ext == "flac":
            path = folder / f"{len(cases):03d}-{label.replace(' ', '-')}.flac"
            data, rate = sf.read(str(write(path.with_suffix(".wav"))), dtype="float32")
            sf.write(str(path), data, rate, format="FLAC")
            path.with_suffix(".wav").unlink()
        else:
            write(path)
        add_path(label, path, seconds)
    # hours of silence, small on disk
    for ext in ("flac", "opus"):
        add_path(f"3 h of silence ({ext})", long_silence(folder, ext, 3 * 3600.0), 3 * 3600.0)
    return cases
