"""SRT and WebVTT subtitles from transcript segments, laid out the way subtitlers do.

A cue holds at most `max_lines` lines of at most `max_chars` characters (42 and 2, the common
broadcast/streaming rule) and lasts at most `max_seconds`. Long segments are cut at word boundaries,
timed by their word timestamps when the transcription has them, else by sharing the segment's time
out in proportion to characters. Cues never cross a segment boundary (segments are whisper's own
phrase units), are stretched to `min_seconds` where the next cue leaves room, and never overlap.
Times are whole milliseconds: `00:00:01,000` in SRT, `00:00:01.000` in WebVTT.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 42
MAX_LINES = 2
MIN_SECONDS = 1.0
MAX_SECONDS = 7.0

_PIECE = re.compile(r"\s*\S+")
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Word:
    start: float
    end: float
    text: str  # as whisper writes it: a leading space where a space separates it from the previous word


def _words_of(segment: Mapping[str, Any]) -> list[_Word]:
    """The segment's words with times: its word timestamps, else its text split and timed by length."""
    start, end = float(segment["start"]), float(segment["end"])
    timed = segment.get("words")
    if timed:
        return [
            _Word(max(start, float(w["start"])), min(max(end, float(w["start"])), float(w["end"])), w["word"])
            for w in timed
            if str(w["word"]).strip()
        ]
    pieces = _PIECE.findall(str(segment.get("text") or ""))
    total = sum(len(p.strip()) for p in pieces)
    words, done = [], 0
    for piece in pieces:
        size = len(piece.strip())
        words.append(
            _Word(start + (end - start) * done / total, start + (end - start) * (done + size) / total, piece)
        )
        done += size
    return words


def _join(words: Sequence[_Word]) -> str:
    return "".join(w.text for w in words).strip()


def _wrap(words: Sequence[_Word], max_chars: int) -> list[str]:
    """Greedy line filling, breaking only before a word that starts with a space."""
    lines: list[str] = []
    current: list[_Word] = []
    for word in words:
        if current and word.text[:1].isspace() and len(_join([*current, word])) > max_chars:
            lines.append(_join(current))
            current = []
        current.append(word)
    lines.append(_join(current))
    return lines


def _layout(words: Sequence[_Word], max_chars: int, max_lines: int) -> tuple[str, ...] | None:
    """The lines for `words` (two lines balanced), or None when they need more than max_lines lines.

    A run with no break in it (one very long word) stays on one line, even past max_chars.
    """
    text = _join(words)
    if len(text) <= max_chars:
        return (text,)
    lines = _wrap(words, max_chars)
    if len(lines) > max_lines:
        return None
    if len(lines) == 2:  # the most even split (a pyramid reads better than a full line and a stub)
        best: tuple[int, tuple[str, ...]] | None = None
        for i in range(1, len(words)):
            if not words[i].text[:1].isspace():
                continue
            first, second = _join(words[:i]), _join(words[i:])
            if len(first) <= max_chars and len(second) <= max_chars:
                score = abs(len(first) - len(second))
                if best is None or score < best[0]:
                    best = (score, (first, second))
        if best is not None:
            return best[1]
    return tuple(lines)


def _segment_cues(
    words: list[_Word], max_chars: int, max_lines: int, max_seconds: float
) -> Iterable[tuple[float, float, tuple[str, ...]]]:
    """Greedy: add words while they fit; a sentence end closes a cue that already fills a line."""
    current: list[_Word] = []
    lines: tuple[str, ...] = ()
    for word in words:
        candidate = [*current, word]
        fits = _layout(candidate, max_chars, max_lines)
        too_long = current and word.end - current[0].start > max_seconds
        if current and (fits is None or too_long):
            yield current[0].start, current[-1].end, lines
            candidate, fits = [word], _layout([word], max_chars, max_lines)
        current, lines = candidate, fits or (_join(candidate),)
        if current and _join(current).endswith(_SENTENCE_END) and len(_join(current)) >= max_chars:
            yield current[0].start, current[-1].end, lines
            current, lines = [], ()
    if current:
        yield current[0].start, current[-1].end, lines


def build_cues(
    segments: Iterable[Mapping[str, Any]],
    *,
    max_chars: int = MAX_CHARS,
    max_lines: int = MAX_LINES,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> list[Cue]:
    """Cues for segments ({start, end, text, words?}) in time order, timed in milliseconds."""
    raw: list[tuple[int, int, tuple[str, ...]]] = []
    for segment in segments:
        words = _words_of(segment)
        for start, end, lines in _segment_cues(words, max_chars, max_lines, max_seconds):
            raw.append((round(start * 1000), round(end * 1000), lines))
    raw.sort(key=lambda cue: cue[0])
    cues: list[Cue] = []
    min_ms = round(min_seconds * 1000)
    for i, (start, end, lines) in enumerate(raw):
        if cues and start < cues[-1].end_ms:
            start = cues[-1].end_ms
        next_start = raw[i + 1][0] if i + 1 < len(raw) else None
        end = max(end, start + min_ms)  # readable: at least min_seconds ...
        if next_start is not None and next_start > start:
            end = min(end, next_start)  # ... unless the next cue starts sooner: no overlap
        end = max(end, start + 1)
        cues.append(Cue(start, end, lines))
    return cues


def timestamp(ms: int, separator: str) -> str:
    """`HH:MM:SS<sep>mmm` (`,` for SRT, `.` for WebVTT)."""
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _safe(line: str) -> str:
    return line.replace("-->", "->")  # an arrow inside text would read as a timing line


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{n}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n"
        + "\n".join(_safe(line) for line in c.lines)
        for n, c in enumerate(cues, start=1)
    ]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _vtt_escape(line: str) -> str:
    return _safe(line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{timestamp(c.start_ms, '.')} --> {timestamp(c.end_ms, '.')}\n"
        + "\n".join(_vtt_escape(line) for line in c.lines)
        for c in cues
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


def srt(segments: Iterable[Mapping[str, Any]]) -> str:
    return to_srt(build_cues(segments))


def vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    return to_vtt(build_cues(segments))
