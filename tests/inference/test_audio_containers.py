"""Containers and file objects that real uploads and library callers bring, generated here.

Each of these was refused, garbled or slow before: a video that runs on after its audio called
"truncated", a length FFmpeg guessed from a bitrate taken as the file's, a streaming WAV's "unknown"
size taken literally, an SDP text that made FFmpeg listen on UDP ports, a file object not at its start.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from inference.audio import decode_audio, probe_media
from inference.types import AudioError
from tests import media


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))


def _encode(
    path: Path,
    fmt: str,
    codec: str,
    samples: np.ndarray,
    rate: int,
    *,
    video_seconds: float = 0.0,
    container_options: dict | None = None,
    codec_options: dict | None = None,
    variable_bitrate: bool = False,
    audio_offset: float = 0.0,
) -> Path:
    """`samples` [C, n] encoded with `codec` into `fmt`, after `video_seconds` of a video track if any."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        video = None
        if video_seconds:
            video = out.add_stream("libvpx" if fmt in ("webm", "matroska") else "libx264", rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(codec, rate=rate, options=codec_options or {})
        audio.layout = layout
        if variable_bitrate:  # LAME's best VBR quality: quiet frames get the lowest bitrate
            audio.codec_context.qscale = True
            audio.codec_context.global_quality = 0
        for index in range(int(video_seconds * 25)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index % 255, np.uint8), format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        pts = int(audio_offset * rate)
        for start in range(0, samples.shape[1], 1152):
            chunk = np.ascontiguousarray(samples[:, start : start + 1152])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, pts
            pts += chunk.shape[1]
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        if video is not None:
            out.mux(video.encode(None))
    return path


@pytest.mark.parametrize("fmt", ["webm", "matroska"])
def test_a_video_that_runs_on_after_its_audio_is_decoded(tmp_path: Path, fmt: str) -> None:
    """A screen recording whose sound stopped before the picture: Matroska's length is the video's."""
    path = _encode(tmp_path / f"clip.{fmt}", fmt, "libopus", _tone(2.0, 48000), 48000, video_seconds=10)
    assert probe_media(path).duration == pytest.approx(10.0, abs=0.1)
    assert decode_audio(path).size / 16000 == pytest.approx(2.0, abs=0.05)


def _quiet_then_loud(rate: int) -> np.ndarray:
    noise = np.random.default_rng(0).standard_normal(rate * 15) * 0.5
    return np.clip(np.concatenate([np.zeros(rate * 5), noise]), -1, 1).astype(np.float32)[None]


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "container_options"),
    [
        ("vbr.mp3", "mp3", "libmp3lame", {"write_xing": "0"}),  # no Xing/Info frame
        ("raw.aac", "adts", "aac", {}),  # ADTS never states a length
    ],
)
def test_a_length_guessed_from_the_first_frames_is_not_held_against_the_file(
    tmp_path: Path, name: str, fmt: str, codec: str, container_options: dict
) -> None:
    """FFmpeg guesses these lengths from the quiet start's low bitrate (64 s, 306 s for 20 s)."""
    path = _encode(
        tmp_path / name,
        fmt,
        codec,
        _quiet_then_loud(44100),
        44100,
        container_options=container_options,
        variable_bitrate=codec == "libmp3lame",
    )
    assert decode_audio(path).size / 16000 == pytest.approx(20.0, abs=0.1)


def test_an_mp3_cut_short_is_still_called_truncated(tmp_path: Path) -> None:
    """jfk.mp3 states its length (a Xing frame): half of it is a cut file, not 5.5 s of speech."""
    cut = media.truncated_copy(media.clip_path("jfk.mp3"), tmp_path / "cut.mp3")
    with pytest.raises(AudioError, match="truncated"):
        decode_audio(cut)


@pytest.mark.parametrize("size", [0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFF])
def test_a_streaming_wav_whose_size_says_unknown_is_decoded(tmp_path: Path, size: int) -> None:
    """SoX and others writing to a pipe cannot go back to fill in the size: they write a placeholder."""
    raw = bytearray(media.write_wav(tmp_path / "a.wav", media.sine(2.0), 16000).read_bytes())
    data_at = raw.index(b"data")
    raw[data_at + 4 : data_at + 8] = size.to_bytes(4, "little")
    assert decode_audio(bytes(raw)).size == 32000


def test_a_cut_wav_is_still_called_truncated(tmp_path: Path) -> None:
    raw = media.write_wav(tmp_path / "a.wav", media.sine(2.0), 16000).read_bytes()
    with pytest.raises(AudioError, match="truncated"):
        decode_audio(raw[: len(raw) // 2])


def test_a_cut_wav_read_from_a_stream_is_called_truncated_too(tmp_path: Path) -> None:
    """From a pipe or socket (no seeking back), a WAV cut in half was decoded as a shorter recording:
    FFmpeg states no length for a stream, so the header's data size is read by us."""
    raw = media.write_wav(tmp_path / "a.wav", media.sine(4.0), 16000).read_bytes()
    with pytest.raises(AudioError, match=r"2\.0 s of audio decoded, 4\.0 s declared"):
        decode_audio(_ReadOnly(raw[: len(raw) // 2]))
    assert decode_audio(_ReadOnly(raw)).size == 4 * 16000
    streamed = bytearray(raw)  # written to a pipe: the size is a placeholder, nothing to check
    data_at = streamed.index(b"data")
    streamed[data_at + 4 : data_at + 8] = (0x7FFFF000).to_bytes(4, "little")
    assert decode_audio(_ReadOnly(bytes(streamed[: len(streamed) // 2]))).size > 0


def test_an_sdp_file_is_refused_at_once_without_listening_on_the_network() -> None:
    """An SDP text names RTP streams: FFmpeg bound UDP ports and waited 20 s for packets."""
    sdp = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    started = time.monotonic()
    with pytest.raises(AudioError, match="not a media file"):
        decode_audio(sdp)
    assert time.monotonic() - started < 3


def test_absurd_sample_rates_in_a_header_are_corruption(tmp_path: Path) -> None:
    """2^31 Hz resampled the whole file into no samples: an empty transcript, no error."""
    raw = bytearray(media.write_wav(tmp_path / "a.wav", media.sine(1.0), 16000).read_bytes())
    raw[24:28] = (2**31 - 1).to_bytes(4, "little")
    with pytest.raises(AudioError, match="sample rate of 2147483647 Hz"):
        decode_audio(bytes(raw))
    with pytest.raises(AudioError, match="sample rate"):
        probe_media(bytes(raw))


def test_a_file_object_not_at_its_start_is_read_from_where_it_stands(tmp_path: Path) -> None:
    """The recording starts at the object's position (after a caller's own header, say); PyAV seeks to
    absolute offsets, so a tone at 0.3 came back as noise peaking at 0.99."""
    wav = media.write_wav(tmp_path / "a.wav", media.sine(1.0, amplitude=0.3), 16000).read_bytes()
    for prefix in (b"xx", b"\0" * 1000):
        file = io.BytesIO(prefix + wav)
        file.seek(len(prefix))
        np.testing.assert_array_equal(decode_audio(file), decode_audio(wav))


class _ReadOnly:
    """Only read(): a socket's or an HTTP body's file object."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class _TellFails(io.BytesIO):
    """Says it can seek, then cannot tell where it is."""

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_file_objects_of_every_kind_decode_or_say_what_is_wrong(tmp_path: Path) -> None:
    flac = media.clip_path("jfk.flac")
    expected = decode_audio(flac)
    np.testing.assert_array_equal(decode_audio(_ReadOnly(flac.read_bytes())), expected)
    np.testing.assert_array_equal(decode_audio(_TellFails(flac.read_bytes())), expected)
    with pytest.raises(AudioError, match="the file is empty"):
        decode_audio(_ReadOnly(b""))
    with pytest.raises(AudioError, match="text mode"), flac.open("r") as text:
        decode_audio(text)
    closed = flac.open("rb")
    closed.close()
    with pytest.raises(AudioError, match="closed"):
        decode_audio(closed)


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "aac"), ("matroska", "libopus")])
def test_a_video_whose_sound_starts_late_keeps_the_videos_times(tmp_path: Path, fmt: str, codec: str) -> None:
    """Sound from 5 s into the picture: the samples start with 5 s of silence, so a transcript's (and
    its subtitles') times are the video's; they came 5 s early."""
    path = _encode(
        tmp_path / f"late.{fmt}", fmt, codec, _tone(3.0, 48000), 48000, video_seconds=10, audio_offset=5.0
    )
    audio = decode_audio(path)
    assert audio.size / 16000 == pytest.approx(8.0, abs=0.1)
    assert not audio[: int(4.9 * 16000)].any()  # silence until the sound starts
    assert np.abs(audio[int(5.2 * 16000) :]).max() > 0.2
    split = decode_audio(path, channels="split")
    assert split.shape[0] == 1 and split.shape[1] == audio.size
    with pytest.raises(AudioError) as too_long:
        decode_audio(path, max_seconds=4.0)
    assert too_long.value.code == "AUDIO_TOO_LONG"
