"""inference.audio against real files: the shared clips, generated containers and broken uploads."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inference.audio import MediaInfo, decode_audio, iter_audio_chunks, probe_media
from inference.types import AudioError
from tests import media
from tests.reference.runner import run_reference


@pytest.fixture(scope="module")
def fw_decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """faster-whisper's decode_audio of every shared clip (PyAV resampler to s16 mono)."""
    out = tmp_path_factory.mktemp("fw_decoded")
    run_reference("fw_features.py", "decode", out, *(media.clip_path(name) for name in media.CLIPS))
    return {name: np.load(out / f"{name}.npy") for name in media.CLIPS}


# clips already at 16 kHz differ only by faster-whisper's s16 rounding; the others by the resampler
# (soxr HQ here, FFmpeg's swr there): max diff measured 0.0013 (jfk.flac), 0.007 (hotwords),
# 0.021 (multilingual)
@pytest.mark.parametrize(
    ("name", "max_diff"),
    [
        ("jfk.flac", 0.005),
        ("jfk.mp3", 1e-4),
        ("stereo_diarization.wav", 1e-4),
        ("multilingual.mp3", 0.05),
        ("hotwords.mp3", 0.02),
    ],
)
def test_clip_decodes_like_faster_whisper(name: str, max_diff: float, fw_decoded: dict) -> None:
    ours = decode_audio(media.clip_path(name))
    reference = fw_decoded[name]
    assert ours.dtype == np.float32 and ours.ndim == 1
    assert abs(len(ours) - len(reference)) <= 2
    n = min(len(ours), len(reference))
    assert np.corrcoef(ours[:n], reference[:n])[0, 1] > 0.9999
    assert np.abs(ours[:n] - reference[:n]).max() < max_diff
    # same loudness: our downmix is a plain mean, like FFmpeg's stereo -> mono matrix here
    assert np.sqrt(np.mean(ours**2)) == pytest.approx(np.sqrt(np.mean(reference**2)), rel=1e-3)


@pytest.mark.parametrize("name", ["jfk.flac", "jfk.mp3"])
def test_jfk_is_eleven_seconds_at_16k(name: str) -> None:
    audio = decode_audio(media.clip_path(name))
    assert len(audio) / 16000 == pytest.approx(11.0, abs=0.05)
    assert 0.01 < np.sqrt(np.mean(audio**2)) < 0.5


def test_stereo_split_gives_two_different_channels_and_mix_is_their_mean() -> None:
    path = media.clip_path("stereo_diarization.wav")
    split = decode_audio(path, channels="split")
    mixed = decode_audio(path)
    assert split.shape == (2, 80000)
    assert np.corrcoef(split[0], split[1])[0, 1] < 0.5  # one speaker per channel
    np.testing.assert_allclose(mixed, split.mean(axis=0), atol=1e-6)


def test_path_bytes_and_file_object_give_the_same_samples() -> None:
    path = media.clip_path("jfk.mp3")
    from_path = decode_audio(path)
    np.testing.assert_array_equal(decode_audio(str(path)), from_path)
    np.testing.assert_array_equal(decode_audio(path.read_bytes()), from_path)
    with open(path, "rb") as file:
        np.testing.assert_array_equal(decode_audio(file), from_path)
    np.testing.assert_array_equal(decode_audio(io.BytesIO(path.read_bytes())), from_path)


def test_mp4_with_a_video_track_decodes_its_audio(mp4_with_video_path: Path) -> None:
    audio = decode_audio(mp4_with_video_path)
    original = decode_audio(media.clip_path("jfk.flac"))
    assert len(audio) / 16000 == pytest.approx(11.0, abs=0.1)
    n = min(len(audio), len(original))
    assert np.corrcoef(audio[:n], original[:n])[0, 1] > 0.98  # AAC is lossy, but the same speech
    info = probe_media(mp4_with_video_path)
    assert info.has_audio and info.has_video and info.duration == pytest.approx(11.0, abs=0.1)


def _sine_file(suffix: str, rate: int, codec: str, **kwargs) -> Callable[[Path], Path]:
    return lambda d: media.encode_audio(d / f"sine{suffix}", media.sine(2.0, rate), rate, codec, **kwargs)


@pytest.mark.parametrize(
    ("build", "seconds"),
    [
        pytest.param(_sine_file(".webm", 48000, "libopus", video="libvpx"), 2.0, id="webm-opus-vp8"),
        pytest.param(_sine_file(".opus", 48000, "libopus", container="ogg"), 2.0, id="ogg-opus"),
        pytest.param(_sine_file(".m4a", 44100, "aac", container="ipod"), 2.0, id="m4a-aac"),
        pytest.param(_sine_file(".mp3", 44100, "libmp3lame"), 2.0, id="mp3-44k"),
        pytest.param(_sine_file(".mov", 48000, "aac", video="libx264"), 2.0, id="mov-h264-aac"),
        pytest.param(_sine_file(".flac", 22050, "flac"), 2.0, id="flac-22k"),
        pytest.param(
            lambda d: media.write_wav(d / "u8.wav", media.sine(1.0, 8000), 8000, "PCM_U8"),
            1.0,
            id="wav-8bit-8k",
        ),
        pytest.param(
            lambda d: media.write_wav(d / "hi.wav", media.sine(1.0, 192000), 192000, "PCM_24"),
            1.0,
            id="wav-192k",
        ),
        pytest.param(
            lambda d: media.write_wav(d / "f.wav", media.sine(1.0, 16000), 16000, "FLOAT"),
            1.0,
            id="wav-float",
        ),
        pytest.param(lambda d: media.write_wav(d / "short.wav", media.sine(0.1), 16000), 0.1, id="0.1s"),
    ],
)
def test_common_formats_decode_to_the_same_sine(build: Callable, seconds: float, tmp_path: Path) -> None:
    audio = decode_audio(build(tmp_path))
    assert audio.dtype == np.float32
    assert len(audio) / 16000 == pytest.approx(seconds, abs=0.03)
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.06)  # the sine's RMS


def test_eight_channels_mix_and_split(tmp_path: Path) -> None:
    channels = np.stack([media.sine(1.0, 16000, 200.0 * (i + 1), 0.1 * (i + 1)) for i in range(8)])
    path = media.write_wav(tmp_path / "eight.wav", channels, 16000)
    split = decode_audio(path, channels="split")
    assert split.shape == (8, 16000)
    np.testing.assert_allclose(split, channels, atol=1e-4)
    np.testing.assert_allclose(decode_audio(path), channels.mean(axis=0), atol=1e-4)
    assert probe_media(path).channels == 8


@pytest.mark.parametrize("signal", ["silence", "noise"])
def test_silence_and_noise_decode(signal: str, tmp_path: Path) -> None:
    samples = getattr(media, signal)(3.0)
    audio = decode_audio(media.write_wav(tmp_path / f"{signal}.flac", samples, 16000))
    np.testing.assert_allclose(audio, samples, atol=1e-4)


BAD_INPUTS = [
    ("empty bytes", lambda d: b"", "AUDIO_DECODE_ERROR", "empty"),
    ("empty file", lambda d: _write(d / "empty.mp3", b""), "AUDIO_DECODE_ERROR", "empty"),
    ("missing file", lambda d: d / "missing.wav", "AUDIO_DECODE_ERROR", "no such file"),
    ("random bytes", lambda d: media.random_bytes(), "AUDIO_DECODE_ERROR", "not a media file"),
    (
        "png named .mp3",
        lambda d: _write(d / "image.mp3", media.png_bytes()),
        "AUDIO_DECODE_ERROR",
        "not an audio",
    ),
    (
        "text file",
        lambda d: _write(d / "notes.wav", b"hello\n" * 500),
        "AUDIO_DECODE_ERROR",
        "not a media file",
    ),
    (
        "truncated flac",
        lambda d: media.truncated_copy(media.clip_path("jfk.flac"), d / "cut.flac"),
        "AUDIO_DECODE_ERROR",
        "truncated",
    ),
    (
        "truncated mp3",
        lambda d: media.truncated_copy(media.clip_path("jfk.mp3"), d / "cut.mp3"),
        "AUDIO_DECODE_ERROR",
        "truncated",
    ),
    (
        "truncated wav",
        lambda d: media.truncated_copy(media.clip_path("stereo_diarization.wav"), d / "cut.wav"),
        "AUDIO_DECODE_ERROR",
        "truncated",
    ),
    (
        "truncated mp4",
        lambda d: media.truncated_copy(
            media.write_mp4_with_video(d / "v.mp4", "hotwords.mp3"), d / "cut.mp4"
        ),
        "AUDIO_DECODE_ERROR",
        "truncated",
    ),
    (
        "playlist",
        lambda d: _write(
            d / "list.m3u8", _playlist(media.write_wav(d / "secret.wav", media.noise(1.0), 16000))
        ),
        "AUDIO_DECODE_ERROR",
        "other files",
    ),
    (
        "video without audio",
        lambda d: media.write_video_only(d / "v.mp4"),
        "NO_AUDIO_STREAM",
        "no audio track",
    ),
    (
        "wav without samples",
        lambda d: media.write_wav(d / "zero.wav", np.zeros(0, np.float32), 16000),
        "AUDIO_DECODE_ERROR",
        "no samples",
    ),
    ("integer array", lambda d: np.zeros(100, np.int16), "AUDIO_DECODE_ERROR", "floating point"),
    (
        "[n, channels] array",
        lambda d: np.zeros((16000, 2), np.float32),
        "AUDIO_DECODE_ERROR",
        "[n, channels]",
    ),
    ("nan array", lambda d: np.full(100, np.nan, np.float32), "AUDIO_DECODE_ERROR", "NaN"),
]


def _playlist(target: Path) -> bytes:
    """An HLS playlist that would make FFmpeg read another local file."""
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\nfile://{target}\n#EXT-X-ENDLIST\n".encode()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("build", "code", "says"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_raises_audio_error_saying_why(
    build: Callable, code: str, says: str, tmp_path: Path
) -> None:
    source = build(tmp_path)
    with pytest.raises(AudioError) as caught:
        decode_audio(source)
    assert caught.value.code == code
    assert says in caught.value.message
    with pytest.raises(AudioError):
        list(iter_audio_chunks(source))


def test_probe_reads_headers_only() -> None:
    assert probe_media(media.clip_path("jfk.flac")) == MediaInfo(
        duration=11.0, has_audio=True, has_video=False, sample_rate=44100, channels=2, container="flac"
    )
    info = probe_media(media.clip_path("multilingual.mp3").read_bytes())
    assert info.container == "mp3" and info.duration == pytest.approx(60.0, abs=0.5)


def test_probe_reports_video_without_audio_and_refuses_non_media(video_without_audio_path: Path) -> None:
    info = probe_media(video_without_audio_path)
    assert (info.has_audio, info.has_video) == (False, True)
    assert info.duration == pytest.approx(2.0, abs=0.2)
    with pytest.raises(AudioError) as caught:
        probe_media(media.png_bytes())
    assert caught.value.code == "AUDIO_DECODE_ERROR"


def test_chunks_are_the_whole_decode_cut_in_windows() -> None:
    path = media.clip_path("multilingual.mp3")
    whole = decode_audio(path)
    chunks = list(iter_audio_chunks(path, chunk_seconds=7.0))
    assert [len(c) for c in chunks[:-1]] == [7 * 16000] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= 7 * 16000
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    split = list(
        iter_audio_chunks(media.clip_path("stereo_diarization.wav"), chunk_seconds=2.0, channels="split")
    )
    assert [c.shape for c in split] == [(2, 32000), (2, 32000), (2, 16000)]


def test_chunks_stream_before_a_truncated_end_raises(tmp_path: Path) -> None:
    cut = media.truncated_copy(media.clip_path("multilingual.mp3"), tmp_path / "cut.mp3", keep=0.6)
    chunks = iter_audio_chunks(cut, chunk_seconds=10.0)
    first = next(chunks)  # yielded before the whole file is read
    assert len(first) == 160000
    with pytest.raises(AudioError, match="truncated"):
        list(chunks)


def test_numpy_arrays_pass_through() -> None:
    mono = media.sine(1.0)
    np.testing.assert_array_equal(decode_audio(mono), mono)
    stereo = np.stack([mono, -mono])
    assert decode_audio(stereo, channels="split").shape == (2, 16000)
    np.testing.assert_allclose(decode_audio(stereo), np.zeros(16000), atol=1e-7)
    assert decode_audio(mono.astype(np.float64)).dtype == np.float32
