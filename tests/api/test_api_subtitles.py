"""Subtitle layout (cliptext.subtitles): line and cue limits, word-timed cuts, no overlaps, timestamps."""

from __future__ import annotations

import re

from cliptext.subtitles import build_cues, srt, timestamp, vtt

LONG = (
    " And so, my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country. We choose to go to the moon in this decade."
)


def _words(text: str, start: float, seconds_per_word: float) -> list[dict]:
    out, t = [], start
    for piece in re.findall(r"\s*\S+", text):
        out.append({"word": piece, "start": round(t, 3), "end": round(t + seconds_per_word * 0.8, 3)})
        t += seconds_per_word
    return out


def test_timestamps_have_the_format_of_each_standard() -> None:
    assert timestamp(1000, ",") == "00:00:01,000"
    assert timestamp(3_723_456, ".") == "01:02:03.456"
    assert timestamp(0, ",") == "00:00:00,000"


def test_long_segment_is_cut_into_cues_of_two_lines_of_42_chars() -> None:
    cues = build_cues([{"start": 0.0, "end": 12.0, "text": LONG}])
    assert len(cues) >= 2
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2
        assert all(len(line) <= 42 for line in cue.lines), cue
    # nothing lost, nothing reordered, cut only at word boundaries
    assert " ".join(" ".join(c.lines) for c in cues) == LONG.strip()
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end_ms <= b.start_ms
    assert cues[0].start_ms == 0 and cues[-1].end_ms == 12000


def test_word_timings_decide_where_a_cut_cue_starts() -> None:
    # words spoken at 0.5 s intervals from t=2: the cue boundaries fall on word starts/ends
    words = _words(LONG, 2.0, 0.5)
    cues = build_cues([{"start": 2.0, "end": words[-1]["end"], "text": LONG, "words": words}])
    starts = {round(w["start"] * 1000) for w in words}
    assert all(c.start_ms in starts for c in cues)
    second_first_word = cues[1].lines[0].split()[0]
    index = len(" ".join(cues[0].lines).split())
    assert words[index]["word"].strip() == second_first_word
    assert cues[1].start_ms == round(words[index]["start"] * 1000)


def test_short_cues_last_a_second_unless_the_next_starts_sooner() -> None:
    cues = build_cues(
        [
            {"start": 0.0, "end": 0.2, "text": " Hi."},
            {"start": 5.0, "end": 5.3, "text": " Yes."},
            {"start": 5.6, "end": 7.0, "text": " No."},
        ]
    )
    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 1000), (5000, 5600), (5600, 7000)]


def test_overlapping_segments_never_give_overlapping_cues() -> None:
    cues = build_cues(
        [
            {"start": 0.0, "end": 3.0, "text": " one two three"},
            {"start": 2.0, "end": 4.0, "text": " four five"},
        ]
    )
    assert cues[0].end_ms <= cues[1].start_ms
    assert all(c.end_ms > c.start_ms for c in cues)


def test_srt_document() -> None:
    text = srt([{"start": 0.5, "end": 2.25, "text": " Hello there."}, {"start": 3, "end": 4, "text": " Bye"}])
    assert text == "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n"


def test_vtt_document_has_its_header_dots_and_escapes() -> None:
    text = vtt([{"start": 61.0, "end": 62.5, "text": " a <b> & c"}])
    assert text == "WEBVTT\n\n00:01:01.000 --> 00:01:02.500\na &lt;b&gt; &amp; c\n"
    assert vtt([]) == "WEBVTT\n\n"
