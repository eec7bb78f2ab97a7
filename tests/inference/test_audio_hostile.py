"""Hostile uploads found by fuzzing the gRPC server: non-finite or absurd float samples, garbage bytes.

Every file is written here (soundfile, PyAV) and goes through the real decoders of inference.audio
(whole file, chunked stream, header probe) and inference.pcm; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cliptext.errors import ErrorCode
from inference.audio import decode_audio, iter_audio_chunks, probe_media
from inference.pcm import MAX_SAMPLE_MAGNITUDE, pcm_to_float32
from inference.types import AudioError
from tests import media

NON_FINITE = "holds NaN or infinite samples"
TOO_LARGE = "holds samples far outside [-1, 1]"


def _whole(path: Path, channels: str = "mix") -> np.ndarray:
    return decode_audio(path, channels=channels)


def _chunked(path: Path, channels: str = "mix") -> np.ndarray:
    """The streaming path long files take (transcribe decodes 30 s windows one after the other)."""
    return np.concatenate(list(iter_audio_chunks(path, chunk_seconds=1.0, channels=channels)), axis=-1)


DECODERS = [pytest.param(_whole, id="whole"), pytest.param(_chunked, id="chunked")]


def _float_wav(path: Path, samples: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> Path:
    """A format-tag-3 WAV holding `samples` ([n] or [n, C]) exactly as given, NaN and 1e30 included."""
    dtype = "float64" if subtype == "DOUBLE" else "float32"
    with np.errstate(over="ignore"):  # 1e300 in a FLOAT file is +inf, as a writer would store it
        samples = samples.astype(dtype)
    sf.write(str(path), samples, rate, subtype=subtype)
    stored, _ = sf.read(str(path), dtype=dtype, always_2d=False)
    np.testing.assert_array_equal(stored, samples)  # soundfile neither clipped nor cleaned them
    return path


def _poisoned(value: float, seconds: float = 3.0, at: float = 2.0) -> np.ndarray:
    """A sine with `value` written over 10 ms at `at` s: the first blocks are clean."""
    samples = media.sine(seconds).astype(np.float64)
    start = int(at * 16000)
    samples[start : start + 160] = value
    return samples


BAD_VALUES = [
    pytest.param(np.nan, NON_FINITE, id="nan"),
    pytest.param(np.inf, NON_FINITE, id="+inf"),
    pytest.param(-np.inf, NON_FINITE, id="-inf"),
    pytest.param(1e30, TOO_LARGE, id="1e30"),
    pytest.param(-1e30, TOO_LARGE, id="-1e30"),
    pytest.param(MAX_SAMPLE_MAGNITUDE * 1.01, TOO_LARGE, id="just-over-the-bound"),
]


def _assert_refused(decode: Callable, source: object, says: str, **options: str) -> None:
    with pytest.raises(AudioError) as caught:
        decode(source, **options)
    assert caught.value.code == ErrorCode.AUDIO_DECODE_ERROR
    assert says in caught.value.message


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(("value", "says"), BAD_VALUES)
def test_float_wav_with_bad_samples_is_a_decode_error(
    decode: Callable, value: float, says: str, tmp_path: Path
) -> None:
    path = _float_wav(tmp_path / "bad.wav", _poisoned(value))
    _assert_refused(decode, path, says)


def test_float_wav_full_of_nan_is_a_decode_error(tmp_path: Path) -> None:
    path = _float_wav(tmp_path / "nan.wav", np.full(16000, np.nan))
    for decode in (_whole, _chunked):
        _assert_refused(decode, path, NON_FINITE)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("channels", ["mix", "split"])
def test_inf_in_one_channel_of_a_resampled_stereo_wav_is_refused(
    decode: Callable, channels: str, tmp_path: Path
) -> None:
    """44.1 kHz stereo goes through the downmix and soxr: the check must come before both."""
    left = media.sine(2.0, rate=44100).astype(np.float64)
    right = left.copy()
    right[50000] = np.inf
    path = _float_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate=44100)
    _assert_refused(decode, path, NON_FINITE, channels=channels)


def test_chunked_decode_refuses_at_the_bad_block_not_after_the_file(tmp_path: Path) -> None:
    path = _float_wav(tmp_path / "late.wav", _poisoned(np.nan, seconds=6.0, at=4.5))
    chunks = iter_audio_chunks(path, chunk_seconds=1.0)
    assert len(next(chunks)) == 16000  # the clean start streams as usual
    with pytest.raises(AudioError, match=NON_FINITE) as caught:
        list(chunks)
    assert caught.value.code == ErrorCode.AUDIO_DECODE_ERROR


@pytest.mark.parametrize(("value", "says"), [(1e300, NON_FINITE), (1e30, TOO_LARGE)])
def test_float64_wav_beyond_float32_is_refused_without_an_overflow_warning(
    value: float, says: str, tmp_path: Path
) -> None:
    """A double above float32's range becomes inf in the cast; pytest turns a stray warning into a failure."""
    path = _float_wav(tmp_path / "double.wav", _poisoned(value), subtype="DOUBLE")
    for decode in (_whole, _chunked):
        _assert_refused(decode, path, says)


@pytest.mark.parametrize(("value", "says"), [(np.nan, NON_FINITE), (1e30, TOO_LARGE), (1e300, NON_FINITE)])
def test_numpy_arrays_with_bad_samples_are_refused(value: float, says: str) -> None:
    audio = _poisoned(value)
    _assert_refused(decode_audio, audio, says)
    _assert_refused(lambda a: list(iter_audio_chunks(a)), audio, says)


def _assert_pcm_refused(value: float, says: str, rate: int, channels: int) -> None:
    samples = np.tile(media.sine(1.0, rate=rate)[:, np.newaxis], (1, channels))
    samples[rate // 2, channels - 1] = value
    data = samples.astype("<f4").tobytes()
    for mix in (True, False):
        with pytest.raises(AudioError) as caught:
            pcm_to_float32(data, "f32le", rate, channels, mix=mix)
        assert caught.value.code == ErrorCode.AUDIO_DECODE_ERROR
        assert f"PCM f32le {says}" in caught.value.message


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("value", [1e30, -1e30, np.finfo(np.float32).max, MAX_SAMPLE_MAGNITUDE * 1.01])
def test_pcm_f32le_far_outside_the_range_is_a_decode_error(value: float, rate: int, channels: int) -> None:
    _assert_pcm_refused(value, TOO_LARGE, rate, channels)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_pcm_f32le_non_finite_keeps_its_message(value: float) -> None:
    """Guard (refused before the magnitude check too): the shared check keeps the PCM message."""
    _assert_pcm_refused(value, NON_FINITE, 16000, 2)


def test_hot_but_finite_audio_is_kept_bit_exact(tmp_path: Path) -> None:
    """Guard: decoders overshoot 1.0 and float files may be mixed hot; such samples pass untouched."""
    samples = media.sine(2.0, amplitude=4.0)
    samples[100] = np.float32(MAX_SAMPLE_MAGNITUDE)
    samples[200] = -np.float32(MAX_SAMPLE_MAGNITUDE)
    path = _float_wav(tmp_path / "hot.wav", samples)
    for decode in (_whole, _chunked):
        np.testing.assert_array_equal(decode(path), samples)
    np.testing.assert_array_equal(decode_audio(samples), samples)
    pcm = pcm_to_float32(samples.astype("<f4").tobytes(), "f32le", 16000, 1)
    np.testing.assert_array_equal(pcm, samples)


GARBAGE = [
    pytest.param(lambda: media.random_bytes(200_000), id="random"),
    pytest.param(lambda: bytes(200_000), id="zeros"),
]
SMALL_GARBAGE = [
    pytest.param(lambda: media.random_bytes(300, seed=1), id="random-small"),
    pytest.param(lambda: bytes(300), id="zeros-small"),
]


def _assert_not_media(path: Path, says: str) -> None:
    """probe_media is what the server runs first on a spooled upload; then a whole or chunked decode."""
    for decode in (probe_media, _whole, _chunked):
        with pytest.raises(AudioError) as caught:
            decode(path)
        assert caught.value.code == ErrorCode.AUDIO_DECODE_ERROR, caught.value.message
        assert says in caught.value.message


# ".bin" is the server's spool suffix (FFmpeg's "Binary text" demuxer takes any bytes so named);
# ".idf" and ".cdg" pick the iCE Draw and CD Graphics demuxers, which do the same
@pytest.mark.parametrize(
    ("suffix", "looks_like"), [(".bin", "Binary text"), (".idf", "iCE"), (".cdg", "CD Graphics")]
)
@pytest.mark.parametrize("make", GARBAGE)
def test_garbage_named_like_text_art_is_not_an_audio_or_video_file(
    make: Callable, suffix: str, looks_like: str, tmp_path: Path
) -> None:
    path = tmp_path / f"cliptext-audio-x{suffix}"
    path.write_bytes(make())
    _assert_not_media(path, f"not an audio or video file (it looks like {looks_like}")


@pytest.mark.parametrize("suffix", ["", ".bin", ".nfo", ".jpg"])
@pytest.mark.parametrize("make", GARBAGE + SMALL_GARBAGE)
def test_garbage_is_a_decode_error_whatever_the_suffix(make: Callable, suffix: str, tmp_path: Path) -> None:
    """Guard over the neighbours of the fix: no suffix, too small for the text-art probe, tty, image2."""
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(make())
    _assert_not_media(path, "not a")  # "not an audio or video file" / "not a media file"


def _strip_id3(path: Path) -> Path:
    data = path.read_bytes()
    if data[:3] == b"ID3":
        size = int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big") + 10
        path.write_bytes(data[size:])
    assert path.read_bytes()[:3] != b"ID3"
    return path


REAL_FORMATS = [
    pytest.param(lambda d, s: media.write_wav(d / "a.wav", s, 16000), "wav", id="wav"),
    pytest.param(lambda d, s: media.write_wav(d / "a.flac", s, 16000), "flac", id="flac"),
    pytest.param(
        lambda d, s: _strip_id3(media.encode_audio(d / "a.mp3", s, 16000, "libmp3lame")),
        "mp3",
        id="mp3-no-id3",
    ),
    pytest.param(lambda d, s: media.encode_audio(d / "a.aac", s, 16000, "aac", "adts"), "aac", id="adts-aac"),
    pytest.param(lambda d, s: media.encode_audio(d / "a.opus", s, 48000, "libopus", "ogg"), "ogg", id="opus"),
    pytest.param(lambda d, s: media.encode_audio(d / "a.m4a", s, 16000, "aac", "ipod"), "mp4", id="m4a"),
    pytest.param(
        lambda d, s: media.encode_audio(d / "a.mp4", s, 16000, "aac", video="mpeg4"), "mp4", id="mp4-video"
    ),
    pytest.param(
        lambda d, s: media.encode_audio(d / "a.mov", s, 16000, "aac", "mov", video="mpeg4"),
        "mov",
        id="mov-video",
    ),
    pytest.param(
        lambda d, s: media.encode_audio(d / "a.webm", s, 48000, "libopus", video="libvpx"),
        "webm",
        id="webm-video",
    ),
]


@pytest.mark.parametrize("suffix", [".bin", ""])
@pytest.mark.parametrize(("build", "container"), REAL_FORMATS)
def test_real_formats_still_probe_and_decode_when_spooled_as_bin(
    build: Callable, container: str, suffix: str, tmp_path: Path
) -> None:
    """Guard: the server's ".bin" spool must not let the text-art demuxer win over a real format."""
    seconds = 0.6  # short: raw MP3/ADTS carry no magic, so FFmpeg probes them on a few frames only
    rate = 48000 if container in ("ogg", "webm") else 16000
    original = build(tmp_path, media.sine(seconds, rate=rate))
    spooled = tmp_path / f"spooled{suffix}"
    spooled.write_bytes(original.read_bytes())
    info = probe_media(spooled)
    assert info.has_audio and container in info.container
    audio = decode_audio(spooled)
    assert len(audio) / 16000 == pytest.approx(seconds, abs=0.15)  # raw ADTS keeps the encoder delay
    assert 0.4 < np.abs(audio).max() < 0.6  # the 0.5 sine, codec overshoot aside


# measured with the decoder before the sample checks existed: they must not change a single sample
@pytest.mark.parametrize(
    ("name", "peak"), [("jfk.flac", 0.7827026844024658), ("jfk.mp3", 0.7821983098983765)]
)
def test_shared_clips_decode_as_before(name: str, peak: float) -> None:
    """Guard: the checks only look at the samples, whole and chunked decodes stay bit-identical."""
    path = media.clip_path(name)
    whole = decode_audio(path)
    assert whole.shape == (176000,) and whole.dtype == np.float32
    assert float(np.abs(whole).max()) == peak
    np.testing.assert_array_equal(np.concatenate(list(iter_audio_chunks(path, chunk_seconds=3.0))), whole)
