"""Files a podcast producer or video editor uploads, made here from jfk.flac: recordings whose timestamps
start late (a stream dump, a clip cut out of a longer one), captures with a hole in their timestamps,
and files with several audio tracks flagged by their use.

Each of these was refused or garbled before: 11 s of Opus or FLAC in Matroska or Ogg with timestamps
from 5 s on were "truncated: 11.0 s decoded, 16.0 s declared"; a capture that lost its sound for 5 s
was refused the same way (Matroska, MP4 with video), or its words after the hole came 5 s early
against the video; of two tracks, a commentary stored first was transcribed, not the default one.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from inference.audio import decode_audio, iter_audio_chunks, probe_media
from inference.types import AudioError
from tests import media
from tests.inference.reference_runs import engine, normalize

_RATES = {"libopus": 48000, "flac": 44100, "aac": 44100}


def _speech(rate: int) -> np.ndarray:
    """jfk.flac as mono float32 at `rate` (11 s, speech from 0.33 s to 11 s)."""
    return decode_audio(media.clip_path("jfk.flac"), rate)


def _frames(stream: av.AudioStream, samples: np.ndarray, rate: int, start: int) -> list[av.AudioFrame]:
    """`samples` cut into the codec's frame size, timestamped in samples from `start`."""
    size = stream.codec_context.frame_size or 4096
    frames = []
    for offset in range(0, samples.size, size):
        block = samples[offset : offset + size]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block[None]), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start + offset, Fraction(1, rate)
        frames.append(frame)
    return frames


def _write(
    path: Path,
    fmt: str,
    codec: str,
    parts: list[tuple[float, np.ndarray]],
    video_seconds: float = 0.0,
) -> Path:
    """An audio track of `parts` (each: its timestamp in seconds, its mono samples), after a video track
    of `video_seconds` when given; holes between the parts are holes in the timestamps."""
    rate = _RATES[codec]
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("mpeg4", rate=Fraction(10)) if video_seconds else None
        if video is not None:
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(codec, rate=rate)
        audio.layout = "mono"
        converter = av.AudioResampler(format=audio.codec_context.format, layout="mono", rate=rate)
        for at, samples in parts:
            for frame in _frames(audio, samples, rate, int(round(at * rate))):
                for converted in converter.resample(frame):
                    converted.pts, converted.time_base = frame.pts, frame.time_base
                    out.mux(audio.encode(converted))
        out.mux(audio.encode(None))
        if video is not None:
            for index in range(int(video_seconds * 10)):
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index % 256, np.uint8), "rgb24")
                picture = picture.reformat(format="yuv420p")
                picture.pts = index
                out.mux(video.encode(picture))
            out.mux(video.encode(None))
    return path


def _lag_of(found: np.ndarray, expected: np.ndarray, most: int = 160) -> int:
    """How many samples `found` sits off `expected` (searched to `most`), where their correlation peaks
    over 0.95; -1 when it nowhere does. Matroska times are whole milliseconds: a lag of a few samples."""
    best_lag, best = -1, 0.95
    for lag in range(-most, most + 1):
        shifted = found[max(0, lag) : found.size + min(0, lag)]
        reference = expected[max(0, -lag) : expected.size - max(0, lag)]
        score = np.corrcoef(shifted, reference)[0, 1]
        if score > best:
            best_lag, best = abs(lag), score
    return best_lag


def _loud_seconds(audio: np.ndarray) -> tuple[float, float]:
    """Where the speech is: the first and last sample over 0.05, in seconds."""
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    return loud[0] / 16000, loud[-1] / 16000


@pytest.mark.parametrize(
    ("fmt", "codec"), [("matroska", "libopus"), ("ogg", "libopus"), ("matroska", "flac"), ("webm", "libopus")]
)
def test_a_recording_whose_timestamps_start_late_is_not_called_truncated(
    tmp_path: Path, fmt: str, codec: str
) -> None:
    """Matroska and Ogg state the last timestamp as the length: 16 s for 11 s of sound from 5 s on."""
    path = _write(tmp_path / f"late.{fmt}", fmt, codec, [(5.0, _speech(_RATES[codec]))])
    assert probe_media(path).duration == pytest.approx(11.0, abs=0.05)
    audio = decode_audio(path)
    assert audio.size / 16000 == pytest.approx(11.0, abs=0.05)
    start, end = _loud_seconds(audio)
    assert start == pytest.approx(0.33, abs=0.05) and end == pytest.approx(11.0, abs=0.05)
    if fmt != "ogg":  # the start taken off the stated length still leaves a file cut in half truncated
        with pytest.raises(AudioError, match="truncated"):
            decode_audio(media.truncated_copy(path, tmp_path / f"cut.{fmt}"))


def _with_a_hole(rate: int, hole: float = 5.0) -> list[tuple[float, np.ndarray]]:
    """jfk with its sound lost for `hole` seconds after its first 3 s (the timestamps jump)."""
    speech = _speech(rate)
    cut = 3 * rate
    return [(0.0, speech[:cut]), (3.0 + hole, speech[cut:])]


@pytest.mark.parametrize(
    ("fmt", "codec", "video_seconds"),
    [
        ("matroska", "libopus", 0.0),
        ("matroska", "libopus", 16.0),
        ("mp4", "aac", 16.0),
        ("matroska", "flac", 16.0),
    ],
)
def test_a_hole_in_the_timestamps_is_silence_and_the_words_after_it_keep_their_times(
    tmp_path: Path, fmt: str, codec: str, video_seconds: float
) -> None:
    """A capture that lost 5 s of sound after 3 s: what follows plays at 8 s, as in any player."""
    rate = _RATES[codec]
    path = _write(tmp_path / f"hole.{fmt}", fmt, codec, _with_a_hole(rate), video_seconds)
    audio = decode_audio(path)
    assert audio.size / 16000 == pytest.approx(16.0, abs=0.05)
    assert not audio[int(3.05 * 16000) : int(7.95 * 16000)].any()
    assert _lag_of(audio[9 * 16000 : 12 * 16000], _speech(16000)[4 * 16000 : 7 * 16000]) in range(17)
    chunks = np.concatenate(list(iter_audio_chunks(path, chunk_seconds=3.0)))
    np.testing.assert_array_equal(chunks, audio)
    split = decode_audio(path, channels="split")
    assert split.shape == (1, audio.size)


def test_the_silence_of_holes_is_bounded(tmp_path: Path) -> None:
    """It counts towards the limit (10 s of sound with a 5 s hole is 15 s: a 12 s limit refuses it),
    and a timestamp an hour on, in a file that says it lasts 11 s, is broken, not an hour of silence."""
    path = _write(tmp_path / "hole.mkv", "matroska", "libopus", _with_a_hole(48000), 16.0)
    with pytest.raises(AudioError) as too_long:
        decode_audio(path, max_seconds=12.0)
    assert too_long.value.code == "AUDIO_TOO_LONG"
    jump = _write(tmp_path / "jump.mkv", "matroska", "libopus", _with_a_hole(48000, hole=3600.0))
    raw = bytearray(jump.read_bytes())
    at = raw.index(b"\x44\x89\x88") + 3  # Matroska's Duration (an 8-byte float, in ms): say 11 s
    raw[at : at + 8] = np.array([11000.0], ">f8").tobytes()
    assert decode_audio(bytes(raw)).size / 16000 == pytest.approx(11.0, abs=0.05)


def test_transcript_times_of_a_capture_with_a_hole_are_the_files(tmp_path: Path) -> None:
    """`python -m inference transcribe` on the capture: the words after the hole are timed after 8 s."""
    path = _write(tmp_path / "hole.mp4", "mp4", "aac", _with_a_hole(44100), 16.0)
    segments, info = engine("fp32").transcribe(path)
    segments = list(segments)
    assert info.duration == pytest.approx(16.0, abs=0.05)
    text = normalize(" ".join(segment.text for segment in segments))
    assert "ask what you can do for your country" in text
    last = segments[-1]
    assert "country" in normalize(last.text) and last.end > 12.0


def _two_tracks(path: Path, first: int, second: int, speech_first: bool) -> Path:
    """Two mono AAC tracks (speech and a tone) flagged `first` and `second` (av dispositions)."""
    speech = _speech(16000)
    tone = media.sine(11.0, amplitude=0.3)
    with av.open(str(path), "w") as out:
        tracks = []
        for flags, samples in (
            (first, speech if speech_first else tone),
            (second, tone if speech_first else speech),
        ):
            track = out.add_stream("aac", rate=16000)
            track.layout, track.disposition = "mono", flags
            tracks.append((track, samples))
        for track, samples in tracks:
            for frame in _frames(track, samples, 16000, 0):
                out.mux(track.encode(frame))
            out.mux(track.encode(None))
    return path


_D = av.stream.Disposition


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
@pytest.mark.parametrize(
    ("first", "second"),
    [(_D.comment, _D.default), (_D.default | _D.visual_impaired, _D.default), (0, _D.default)],
    ids=["commentary-first", "audio-description-first", "default-second"],
)
def test_of_two_tracks_the_one_a_player_plays_is_decoded(
    tmp_path: Path, suffix: str, first: int, second: int
) -> None:
    """The tone is stored first, flagged as a commentary or description, or just not the default."""
    path = _two_tracks(tmp_path / f"two{suffix}", first, second, speech_first=False)
    audio = decode_audio(path)
    assert _loud_seconds(audio)[0] == pytest.approx(0.33, abs=0.05)  # the tone is loud from 0 s
    # flagged alike (OBS: the mix first, then each source), the first, as faster-whisper takes it
    alike = _two_tracks(tmp_path / f"alike{suffix}", _D.default, _D.default, speech_first=True)
    np.testing.assert_array_equal(decode_audio(alike), decode_audio(path))
