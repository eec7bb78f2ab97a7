"""Subtitles as a viewer meets them: cues of split channels shown while their words are spoken, no cue
flashed too fast to read where the segment's own time allows a readable split, no cue left on screen
past the longest a subtitle stays up. Checked with the strict readers, on made-up segments and on
what the engine transcribes from the shared clips.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from cliptext.subtitles import MAX_SECONDS, MIN_SECONDS, build_cues, srt, vtt
from inference.transcribe import WhisperEngine
from inference.types import TranscribeOptions
from tests.api.test_formats_review_parsers import ParsedCue, parse_srt, parse_vtt
from tests.media import clip_path

LICENCE = " Permission is hereby granted, free of charge, to any person obtaining a copy of this software"


def _timed(text: str, start: float, end: float) -> dict:
    """A segment with evenly spread word timestamps, as whisper gives them."""
    pieces = [" " + word for word in text.split()]
    step = (end - start) / len(pieces)
    words = [
        {"word": p, "start": round(start + i * step, 3), "end": round(start + (i + 0.9) * step, 3)}
        for i, p in enumerate(pieces)
    ]
    words[-1]["end"] = end
    return {"start": start, "end": end, "text": text, "words": words}


def _read(segments: list[dict]) -> list[ParsedCue]:
    cues = parse_srt(srt(segments))
    assert cues == parse_vtt(vtt(segments))
    return cues


def _spoken_in(cue: ParsedCue, segments: list[dict]) -> dict:
    """The segment whose words the cue shows."""
    words = cue.text.split()
    return next(s for s in segments if " ".join(words) in " ".join(s["text"].split()))


def test_a_second_channel_starting_together_is_shown_while_it_is_spoken() -> None:
    # channels="split": each channel's first segment starts at 0; the shorter one was pushed behind
    # the longer one's first cue and shown after its speech had ended, and pushed the next cue too
    left = _timed(
        " He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
        0.0,
        4.66,
    )
    right = _timed(" The horizon seems extremely distant.", 0.0, 2.44)
    segments = [left, right]
    for cue in _read(segments):
        segment = _spoken_in(cue, segments)
        assert cue.start_ms < segment["end"] * 1000, (cue, "shown after it was said")
        assert cue.end_ms - cue.start_ms >= MIN_SECONDS * 1000, (cue, "flashed up")
    assert _read(segments)[-1].end_ms <= 4660 + MIN_SECONDS * 1000


def test_split_channels_of_a_real_recording(model_dir) -> None:
    engine = WhisperEngine.load(str(model_dir), precision="fp32", threads=2)
    options = TranscribeOptions(word_timestamps=True, channels="split")
    segments = [asdict(s) for s in engine.transcribe(str(clip_path("stereo_diarization.wav")), options)[0]]
    assert {s["channel"] for s in segments} == {0, 1}
    cues = _read(segments)
    for cue in cues:
        segment = _spoken_in(cue, segments)
        assert cue.start_ms < segment["end"] * 1000, (cue, segment["text"])
        assert cue.end_ms - cue.start_ms >= MIN_SECONDS * 1000, cue
        assert cue.end_ms <= max(s["end"] for s in segments) * 1000 + MIN_SECONDS * 1000


def test_the_rest_of_a_long_segment_is_no_flash_too_fast_to_read() -> None:
    # 93 characters over 4.9 s: greedy filling left "this software" on screen for half a second
    segments = [_timed(LICENCE, 0.0, 4.9), _timed(" and associated documentation files", 4.9, 8.78)]
    cues = _read(segments)
    first = [c for c in cues if _spoken_in(c, segments) is segments[0]]
    assert len(first) == 2
    assert " ".join(c.text.replace("\n", " ") for c in first) == LICENCE.strip()
    for cue in first:
        assert cue.end_ms - cue.start_ms >= MIN_SECONDS * 1000, cue
        assert len(cue.text.replace("\n", "")) / ((cue.end_ms - cue.start_ms) / 1000) <= 25, cue


def test_a_split_still_ends_cues_at_a_sentence_end() -> None:
    text = " This first sentence is long enough to fill a line. Then a few more words follow it"
    cues = _read([_timed(text, 0.0, 6.0)])
    assert cues[0].text.replace("\n", " ").endswith("fill a line.")


@pytest.mark.parametrize("timed", [False, True])
def test_no_cue_stays_up_longer_than_the_longest_a_subtitle_should(timed: bool) -> None:
    # a short phrase whisper stretched over music or silence was one cue on screen for 30 s
    segment = {"start": 10.0, "end": 40.0, "text": " Music"}
    if timed:
        segment["words"] = [{"word": " Music", "start": 10.0, "end": 40.0}]
    cues = _read([segment, {"start": 41.0, "end": 42.0, "text": " Next."}])
    assert cues[0].start_ms == 10_000
    assert cues[0].end_ms - cues[0].start_ms <= MAX_SECONDS * 1000
    assert [c.text for c in cues] == ["Music", "Next."]
    assert all(c.end_ms - c.start_ms <= MAX_SECONDS * 1000 for c in build_cues([segment]))
