"""Strict readers of SRT and WebVTT written from the specifications (no such package is installed),
and checks that they refuse what a player would misread, so that the subtitle tests can rely on them.

WebVTT: W3C "WebVTT: The Web Video Text Tracks Format" (file structure, cue timings, cue text with
its escapes, NOTE blocks). SRT has no formal standard: the SubRip layout every player reads (a counter
from 1, `hh:mm:ss,mmm --> hh:mm:ss,mmm`, text lines, a blank line between cues).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pytest

_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t]+.*)?$")
_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_SRT_TIMING = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$")
# the character references WebVTT cue text may hold (named ones of its list, and numeric ones)
_VTT_REFERENCE = re.compile(r"&(?:amp|lt|gt|lrm|rlm|nbsp|#\d+|#[xX][0-9a-fA-F]+);")


@dataclass(frozen=True)
class ParsedCue:
    start_ms: int
    end_ms: int
    text: str  # lines joined with "\n", character references decoded (WebVTT)


def _ms(hours: str | None, minutes: str, seconds: str, millis: str) -> int:
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def _blocks(body: str) -> list[list[str]]:
    lines = re.split(r"\r\n|\r|\n", body)
    blocks, current = [], []
    for line in lines:
        if line == "":
            if current:
                blocks.append(current)
            current = []
        else:
            current.append(line)
    if current:
        blocks.append(current)
    return blocks


def _check_order(cues: list[ParsedCue]) -> None:
    for cue in cues:
        assert cue.end_ms > cue.start_ms, f"a cue must end after it starts: {cue}"
    for before, after in zip(cues, cues[1:], strict=False):
        assert before.end_ms <= after.start_ms, f"overlapping or unordered cues: {before} {after}"


def parse_vtt(body: str) -> list[ParsedCue]:
    """The cues of a WebVTT file; AssertionError where the file breaks the authoring rules."""
    assert body.startswith("WEBVTT"), "a WebVTT file starts with WEBVTT"
    assert body[6:7] in ("", " ", "\t", "\n", "\r"), "WEBVTT is followed by a space, tab or line end"
    blocks = _blocks(body)
    assert blocks[0][0].startswith("WEBVTT")
    cues: list[ParsedCue] = []
    for block in blocks[1:]:
        if block[0] == "NOTE" or block[0].startswith(("NOTE ", "NOTE\t")):
            assert not any("-->" in line for line in block), "a NOTE holds no -->"
            continue
        head = 0 if "-->" in block[0] else 1  # an optional cue identifier first
        assert head < len(block), f"a block without a timing line: {block}"
        match = _VTT_TIMING.match(block[head])
        assert match, f"not a cue timing line: {block[head]!r}"
        payload = block[head + 1 :]
        assert payload, f"a cue without text: {block}"
        for line in payload:
            assert "-->" not in line, f"--> inside cue text ends the cue: {line!r}"
            assert "<" not in line, f"a raw < in cue text starts a tag: {line!r}"
            stripped = _VTT_REFERENCE.sub("", line)
            assert "&" not in stripped, f"a raw & in cue text: {line!r}"
        groups = match.groups()
        cues.append(ParsedCue(_ms(*groups[:4]), _ms(*groups[4:]), html.unescape("\n".join(payload))))
    _check_order(cues)
    return cues


def parse_srt(body: str) -> list[ParsedCue]:
    """The cues of an SRT file; AssertionError where a player would misread it."""
    cues: list[ParsedCue] = []
    for number, block in enumerate(_blocks(body), start=1):
        assert block[0] == str(number), f"cue {number} is numbered {block[0]!r}"
        assert len(block) >= 3, f"a cue needs a counter, a timing line and text: {block}"
        match = _SRT_TIMING.match(block[1])
        assert match, f"not an SRT timing line: {block[1]!r}"
        for line in block[2:]:
            assert "-->" not in line, f"--> inside cue text reads as a timing line: {line!r}"
        groups = match.groups()
        cues.append(ParsedCue(_ms(*groups[:4]), _ms(*groups[4:]), "\n".join(block[2:])))
    _check_order(cues)
    return cues


def test_the_readers_take_well_formed_files() -> None:
    vtt = "WEBVTT\n\nNOTE made by hand\n\nc1\n00:01.000 --> 00:00:02.500 align:start\na &lt;b&gt; &amp; c\n"
    assert parse_vtt(vtt) == [ParsedCue(1000, 2500, "a <b> & c")]
    assert parse_vtt("WEBVTT\n\n") == []
    assert parse_vtt("WEBVTT\r\n\r\n100:00:00.000 --> 100:00:01.000\r\nlate\r\n")[0].start_ms == 360_000_000
    srt = "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n"
    assert parse_srt(srt) == [ParsedCue(500, 2250, "Hello there."), ParsedCue(3000, 4000, "Bye")]
    assert parse_srt("") == []


@pytest.mark.parametrize(
    "body",
    [
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfirst\n\nsecond\n",  # a blank line ends the cue
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na --> b\n",
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na < b\n",
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfish & chips\n",
        "WEBVTT\n\n00:00:00,000 --> 00:00:01,000\nx\n",
        "WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nx\n",
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nx\n\n00:00:01.000 --> 00:00:03.000\ny\n",
        "WEBVTTX\n\n",
    ],
)
def test_the_vtt_reader_refuses_what_players_misread(body: str) -> None:
    with pytest.raises(AssertionError):
        parse_vtt(body)


@pytest.mark.parametrize(
    "body",
    [
        "1\n00:00:00,000 --> 00:00:01,000\nfirst\n\nsecond\n",
        "1\n00:00:00,000 --> 00:00:01,000\na --> b\n",
        "0\n00:00:00,000 --> 00:00:01,000\nx\n",
        "1\n00:00:00.000 --> 00:00:01.000\nx\n",
        "1\n00:00:01,000 --> 00:00:01,000\nx\n",
    ],
)
def test_the_srt_reader_refuses_what_players_misread(body: str) -> None:
    with pytest.raises(AssertionError):
        parse_srt(body)
