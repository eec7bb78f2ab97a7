"""Chained Ogg: recordings one after another in one file, each with its own headers (stream rips, `cat`
of voice notes, recorders that start a new link when the format changes).

FFmpeg's Ogg demuxer stopped at a link whose channels or rate differed from the first one's ("patch
welcome", refused), read a FLAC link at another rate as corrupt data, and stated the first link's length
as the whole file's (so a long chain got the job timeout of a short clip). Each link is now decoded on
its own and the lengths add up.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from cliptext.errors import ErrorCode
from inference.audio import decode_audio, iter_audio_chunks, probe_media
from inference.types import AudioError
from tests import media
from tests.inference.reference_runs import engine, ground_truth, normalize

# (codec, extension, first link's rate and channels, second link's), each a change FFmpeg could not follow
CHANGES = {
    "opus mono then stereo": ("libopus", "opus", (48000, 1), (48000, 2)),
    "flac 16 kHz then 44.1 kHz": ("flac", "oga", (16000, 1), (44100, 1)),
    "flac mono then stereo": ("flac", "oga", (16000, 1), (16000, 2)),
}


def _link(path: Path, codec: str, seconds: float, rate: int, channels: int) -> Path:
    """One Ogg file: a tone (a different one on each channel) of `seconds`."""
    tones = [media.sine(seconds, rate, 300.0 + 200.0 * channel) for channel in range(channels)]
    return media.encode_audio(path, np.stack(tones), rate, codec, "ogg")


def _links(tmp_path: Path, codec: str, ext: str, first: tuple, second: tuple) -> tuple[Path, Path]:
    return (
        _link(tmp_path / f"first.{ext}", codec, 2.0, *first),
        _link(tmp_path / f"second.{ext}", codec, 3.0, *second),
    )


@pytest.mark.parametrize("change", CHANGES)
def test_a_chain_decodes_to_its_links_one_after_the_other(tmp_path: Path, change: str) -> None:
    first, second = _links(tmp_path, *CHANGES[change])
    chained = decode_audio(first.read_bytes() + second.read_bytes())
    expected = np.concatenate([decode_audio(first), decode_audio(second)])
    np.testing.assert_array_equal(chained, expected)
    assert chained.size / 16000 == pytest.approx(5.0, abs=0.01)


@pytest.mark.parametrize("change", CHANGES)
def test_a_chain_states_the_length_of_all_its_links(tmp_path: Path, change: str) -> None:
    first, second = _links(tmp_path, *CHANGES[change])
    path = tmp_path / "chained.ogg"
    path.write_bytes(first.read_bytes() + second.read_bytes() + first.read_bytes())
    assert probe_media(path).duration == pytest.approx(7.0, abs=0.05)


def test_the_length_limit_counts_every_link(tmp_path: Path) -> None:
    first, second = _links(tmp_path, *CHANGES["flac 16 kHz then 44.1 kHz"])
    chained = first.read_bytes() + second.read_bytes()
    assert decode_audio(chained, max_seconds=5.5).size == 5 * 16000
    with pytest.raises(AudioError, match="limit of 4 s") as raised:
        decode_audio(chained, max_seconds=4.0)
    assert raised.value.code == ErrorCode.AUDIO_TOO_LONG


def test_split_channels_refuse_a_chain_whose_channels_change(tmp_path: Path) -> None:
    first, second = _links(tmp_path, *CHANGES["opus mono then stereo"])
    with pytest.raises(AudioError, match=r"channels changes mid-stream \(1 -> 2\)"):
        decode_audio(first.read_bytes() + second.read_bytes(), channels="split")
    same = _link(tmp_path / "same.opus", "libopus", 1.0, 48000, 2)
    assert decode_audio(second.read_bytes() + same.read_bytes(), channels="split").shape == (2, 4 * 16000)


def test_a_chain_read_from_a_file_object_not_at_its_start(tmp_path: Path) -> None:
    """The links are found from where the recording begins, not from the start of the file object."""
    first, second = _links(tmp_path, *CHANGES["opus mono then stereo"])
    chained = first.read_bytes() + second.read_bytes()
    file = io.BytesIO(b"not part of it" + chained)
    file.seek(len(b"not part of it"))
    np.testing.assert_array_equal(decode_audio(file), decode_audio(chained))
    chunks = list(iter_audio_chunks(io.BytesIO(chained), chunk_seconds=1.5))
    np.testing.assert_array_equal(np.concatenate(chunks), decode_audio(chained))


def test_a_chain_with_a_broken_page_header_is_decoded_or_refused_as_before(tmp_path: Path) -> None:
    """The scan stops at a page it cannot read: what follows goes to FFmpeg as one piece, as any file."""
    first, second = _links(tmp_path, *CHANGES["flac 16 kHz then 44.1 kHz"])
    chained = bytearray(first.read_bytes() + second.read_bytes() + first.read_bytes())
    chained[len(first.read_bytes()) + 1] ^= 0xFF  # the second link's first "OggS" is no more
    try:
        audio = decode_audio(bytes(chained))
    except AudioError as error:
        assert error.code == ErrorCode.AUDIO_DECODE_ERROR
    else:
        assert audio.size / 16000 >= 2.0 - 0.01


def test_speech_in_every_link_is_transcribed(tmp_path: Path) -> None:
    """jfk as a FLAC link at 44.1 kHz, then as a stereo Opus link at 48 kHz: both times the words."""
    jfk_path = media.clip_path("jfk.flac")
    flac = media.encode_audio(tmp_path / "a.oga", decode_audio(jfk_path, 44100), 44100, "flac", "ogg")
    speech = decode_audio(jfk_path, 48000)
    opus = media.encode_audio(tmp_path / "b.opus", np.stack([speech, speech]), 48000, "libopus", "ogg")
    segments, info = engine("fp32").transcribe(flac.read_bytes() + opus.read_bytes())
    text = normalize(" ".join(segment.text for segment in segments))
    assert info.duration == pytest.approx(22.0, abs=0.1)
    jfk = normalize(ground_truth("jfk.flac"))
    assert text.count(jfk) == 2, text


def _bare_pages(count: int, serial_base: int = 0) -> bytes:
    """`count` pairs of empty Ogg pages (a stream's first, then its last): each pair a 'link' of nothing."""
    pages = bytearray()
    for i in range(count):
        for flags in (0x02, 0x04):  # BOS, then EOS
            header = b"OggS" + bytes([0, flags]) + (0).to_bytes(8, "little")
            header += (serial_base + i).to_bytes(4, "little") + (0).to_bytes(8, "little") + b"\x00"
            pages += header
    return bytes(pages)


def test_a_file_of_thousands_of_chained_links_is_refused_at_once(tmp_path: Path) -> None:
    """54 bytes per 'link': a 2 GiB upload would have listed 40 million of them (memory), and each
    link is opened on its own (minutes of CPU). More than _MAX_OGG_LINKS is refused as it is found."""
    first, _ = _links(tmp_path, *CHANGES["opus mono then stereo"])
    hostile = first.read_bytes() + _bare_pages(5000, serial_base=1000)
    for run in (probe_media, decode_audio):
        with pytest.raises(AudioError, match="more than 1000 recordings chained") as refused:
            run(hostile)
        assert refused.value.code == ErrorCode.AUDIO_DECODE_ERROR


def test_a_capture_cut_in_the_next_links_headers_keeps_what_came_before(tmp_path: Path) -> None:
    """A stream capture stopped while the next recording's headers came: that link holds no audio.
    What came before is the recording (FFmpeg, reading one container, gave it), not an error."""
    first, second = _links(tmp_path, *CHANGES["flac 16 kHz then 44.1 kHz"])
    cut = first.read_bytes() + second.read_bytes()[:60]  # the second link's first page, cut
    audio = decode_audio(cut)
    np.testing.assert_array_equal(audio, decode_audio(first))
    assert probe_media(cut).duration == pytest.approx(2.0, abs=0.05)
