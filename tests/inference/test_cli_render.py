"""The engine CLI's subtitles (`python -m inference transcribe --format srt|vtt`) are the API's: valid for
strict SRT and WebVTT readers whatever text whisper decodes. They were one cue per segment, unescaped."""

from __future__ import annotations

import pytest

from inference.__main__ import render
from inference.types import Segment
from tests.api.test_formats_review_parsers import parse_srt, parse_vtt

TEXTS = [" <b>bold</b> & co", " a ---> b", " first\n\nsecond", "   ", " fine"]


def _segments() -> list[Segment]:
    common = {"seek": 0, "tokens": (1,), "avg_logprob": -0.1, "compression_ratio": 1.0}
    spans = [(0.0, 1.5), (1.5, 3.0), (3.0, 3.0), (3.0, 4.0), (3.5, 5.0)]  # empty and overlapping too
    return [
        Segment(id=i, start=start, end=end, text=text, no_speech_prob=0.0, temperature=0.0, **common)
        for i, (text, (start, end)) in enumerate(zip(TEXTS, spans, strict=True))
    ]


@pytest.mark.parametrize(("fmt", "parse"), [("srt", parse_srt), ("vtt", parse_vtt)])
def test_cli_subtitles_pass_a_strict_reader(fmt, parse) -> None:
    cues = parse(render(_segments(), fmt))
    text = " ".join(cue.text for cue in cues)
    assert "first second" in text.replace("\n", " ")  # the blank line no longer ended the cue
    assert "fine" in text
    if fmt == "vtt":
        assert "<b>bold</b> & co" in text  # escaped in the file, the same text once read
