"""SRT and WebVTT from hostile or non-Latin transcript text, read back by strict readers of the specs.

Whisper decodes byte-level tokens: a segment's text may hold a newline or CR, arrows, markup
characters, any script. What a player reads back must be the same cues with the same words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

import pytest

from cliptext.subtitles import EMPTY_SRT, build_cues, srt, vtt
from tests.api.test_formats_review_parsers import ParsedCue, parse_srt, parse_vtt

CHINESE = "你好世界我们今天来谈一谈语音识别的问题。"
JAPANESE = "「こんにちは」と言った。ありがとうございました。今日はいい天気ですね。明日も晴れるでしょう。"
NO_LINE_START = "。、，！？」』）ーっゃゅょ"


def _columns(line: str) -> int:
    """Display width as a terminal or a player lays text out (wide CJK = 2, combining marks = 0)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line
    )


def _shown(cue: ParsedCue) -> ParsedCue:
    """An SRT cue's text as a player shows it: the zero-width joiner written after `<` and `\\` (so
    that no player reads a tag or an escape there) is invisible."""
    return replace(cue, text=re.sub(r"(?<=[<\\])\u200d", "", cue.text))


def _both(segments: list[dict], same: bool = True) -> tuple[list[ParsedCue], list[ParsedCue]]:
    """The cues of the SRT and of the WebVTT document, each read strictly; they agree unless the
    text holds `-->`, which WebVTT escapes and SRT, having no escapes, writes as `->`."""
    from_srt = [_shown(cue) for cue in parse_srt(srt(segments))]
    from_vtt = parse_vtt(vtt(segments))
    if same:
        assert from_srt == from_vtt
    return from_srt, from_vtt


@pytest.mark.parametrize(
    "text",
    [
        " first line\n\nsecond line",
        " one\r\n\r\ntwo",
        " carriage\rreturn",
        " line\nfeed and more words to fill the cue past one line of text",
        " unicode\u2028line\u2029separators",
        " tab\tand\x0bvertical\x0cform",
    ],
)
def test_a_line_end_inside_segment_text_never_ends_or_adds_a_line(text: str) -> None:
    segments = [{"start": 0.0, "end": 3.0, "text": text}, {"start": 3.0, "end": 5.0, "text": " next"}]
    cues, _ = _both(segments)
    assert len(cues) == 2
    assert " ".join(cues[0].text.split()) == " ".join(text.split())
    assert all(len(cue.text.split("\n")) <= 2 for cue in cues)  # lines as a player reads them


def test_a_line_end_inside_a_timed_word_never_ends_the_cue() -> None:
    words = [
        {"word": " up", "start": 0.0, "end": 0.5},
        {"word": "\n\n2\n00:00:09,000 --> 00:00:10,000", "start": 0.5, "end": 1.0},
        {"word": " down", "start": 1.0, "end": 1.5},
    ]
    cues, vtt_cues = _both([{"start": 0.0, "end": 1.5, "text": "ignored", "words": words}], same=False)
    assert len(cues) == len(vtt_cues) == 1
    assert cues[0].text.split() == ["up", "2", "00:00:09,000", "->", "00:00:10,000", "down"]
    assert vtt_cues[0].text.split() == ["up", "2", "00:00:09,000", "-->", "00:00:10,000", "down"]


@pytest.mark.parametrize("arrow", ["-->", "--->", "---->", "-->>", "<!-- -->"])
def test_no_arrow_survives_into_cue_text(arrow: str) -> None:
    text = f"a {arrow} b"
    cues, vtt_cues = _both([{"start": 0.0, "end": 2.0, "text": " " + text}], same=False)
    assert len(cues) == 1 and "-->" not in cues[0].text
    assert [cue.text for cue in vtt_cues] == [text]  # WebVTT escapes it: the text as written


def test_markup_and_every_script_come_back_as_written() -> None:
    texts = [
        " a <b>bold</b> & &amp; &lt; <c.yellow>x</c> <00:00:01.000> NOTE",
        " שלום עולם, مرحبا بالعالم",  # right to left
        " cafe\u0301 Zoe\u0308 ",  # combining marks
        " 👩\u200d👩\u200d👧 family 🎉",  # emoji, a ZWJ sequence
        "WEBVTT",
    ]
    segments = [{"start": 2.0 * i, "end": 2.0 * i + 1.5, "text": t} for i, t in enumerate(texts)]
    cues, _ = _both(segments)
    assert [cue.text.replace("\n", " ") for cue in cues] == [t.strip() for t in texts]


@pytest.mark.parametrize("timed", [False, True])
@pytest.mark.parametrize("text", [CHINESE * 6, JAPANESE * 2])
def test_text_without_spaces_is_wrapped_within_the_line_and_cue_limits(text: str, timed: bool) -> None:
    seconds = 0.2
    words = [{"word": ch, "start": i * seconds, "end": (i + 1) * seconds} for i, ch in enumerate(text)]
    end = len(text) * seconds
    cues, _ = _both([{"start": 0.0, "end": end, "text": text, "words": words if timed else None}])
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2, cue
        assert all(_columns(line) <= 42 for line in lines), cue
        assert cue.end_ms - cue.start_ms <= 7000, cue
        assert not any(line[0] in NO_LINE_START for line in lines), cue
    assert "".join(cue.text.replace("\n", "") for cue in cues) == text  # nothing lost or reordered
    assert cues[-1].end_ms == round(end * 1000)


def test_korean_and_latin_still_break_at_spaces_only() -> None:
    korean = " 안녕하세요 저는 학생입니다 오늘은 날씨가 좋네요 내일도 맑을 거예요 감사합니다"
    cues, _ = _both([{"start": 0.0, "end": 6.0, "text": korean}])
    words = korean.split()
    assert [w for cue in cues for w in cue.text.split()] == words
    assert all(_columns(line) <= 42 for cue in cues for line in cue.text.split("\n"))


def test_cue_times_past_a_hundred_hours_and_at_rounding_edges() -> None:
    segments = [
        {"start": 1.0, "end": 1.9995, "text": " edge"},
        {"start": 1.9995, "end": 3.0, "text": " after"},
        {"start": 360_000.0, "end": 360_002.5, "text": " late"},
    ]
    cues, _ = _both(segments)
    assert cues[0].end_ms == cues[1].start_ms  # no gap and no overlap from rounding each side
    assert (cues[-1].start_ms, cues[-1].end_ms) == (360_000_000, 360_002_500)
    assert "100:00:00,000 --> 100:00:02,500" in srt(segments)


def test_zero_length_reversed_and_empty_segments() -> None:
    segments = [
        {"start": 1.0, "end": 1.0, "text": " zero"},
        {"start": 5.0, "end": 4.0, "text": " reversed"},
        {"start": 6.0, "end": 7.0, "text": "   "},
        {"start": 8.0, "end": 9.0, "text": ""},
    ]
    cues, _ = _both(segments)
    assert [cue.text for cue in cues] == ["zero", "reversed"]
    # no cues: SRT is one cue of 1 ms with no text (an empty file is one ffmpeg cannot open; see
    # test_subtitles_followups_s16), WebVTT its header alone
    assert srt([]) == EMPTY_SRT == "1\n00:00:00,000 --> 00:00:00,001\n\n" and vtt([]) == "WEBVTT\n\n"
    assert parse_vtt(vtt([])) == []


def test_cues_of_a_long_latin_transcript_keep_the_layout_rules() -> None:
    sentence = " The quick brown fox jumps over the lazy dog near the riverbank today."
    segments = [{"start": 10.0 * i, "end": 10.0 * i + 9.5, "text": sentence * 3} for i in range(30)]
    cues = build_cues(segments)
    parsed, _ = _both(segments)
    assert len(parsed) == len(cues)
    for cue in parsed:
        assert all(len(line) <= 42 for line in cue.text.split("\n"))
        assert not re.search(r"^\s|\s$", cue.text)


def test_no_line_breaks_inside_an_emoji_sequence_or_before_a_combining_mark() -> None:
    family, thumb = "👩\u200d👩\u200d👧", "👍🏽"
    text = "文" * 17 + family + thumb + "文" * 3 + "e\u0301" + "文" * 20
    cues, _ = _both([{"start": 0.0, "end": 6.0, "text": text}])
    lines = [line for cue in cues for line in cue.text.split("\n")]
    assert "".join(lines) == text
    assert any(family + thumb in line for line in lines)
    assert not any(unicodedata.combining(line[0]) for line in lines)
