"""SRT and WebVTT subtitles from transcript segments, laid out the way subtitlers do.

A cue holds at most `max_lines` lines of at most `max_chars` characters (42 and 2, the common
broadcast/streaming rule) and lasts at most `max_seconds`. Long segments are cut at word boundaries,
timed by their word timestamps when the transcription has them, else by sharing the segment's time
out in proportion to characters; a cut segment's last two cues share its words evenly (no stub of a
word or two flashed up). Cues never cross a segment boundary (segments are whisper's own phrase
units), are stretched to `min_seconds` where the next cue leaves room, and never overlap: of cues
that start together (the channels of a split transcription), the one whose segment ends first goes
first, and a cue pushed late that way still lasts `min_seconds`.
Times are whole milliseconds: `00:00:01,000` in SRT, `00:00:01.000` in WebVTT.

Line lengths are display widths (a CJK character is two columns, a combining mark none). Scripts
written without spaces (Chinese, Japanese) break between characters, never before closing
punctuation. Any whitespace in the text (a newline whisper decoded, a CR) is one space: a blank line
would end the cue early, a lone line end would add a line. WebVTT escapes `&`, `<` and `>`; SRT has
no escapes, so an arrow `-->` in the text is written `->` there (it would read as a timing line), and
text a player would take for markup is written so that it shows as text (see `_srt_text`).

A cue ends at a pause in the speech: where word timestamps leave more than `max_gap` seconds between
two words, the words after it start a new cue (the cue before does not stay up through the silence).

An empty transcript is one cue with no text (see `to_srt`), not an empty file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_CHARS = 42
MAX_LINES = 2
MIN_SECONDS = 1.0
MAX_SECONDS = 7.0
MAX_GAP = 1.5  # seconds of silence between two timed words that end a cue

_PIECE = re.compile(r"\s*\S+")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
# no line starts with closing punctuation or a small kana, none ends with opening punctuation (kinsoku)
_NO_LINE_START = frozenset(
    ".,!?:;)]}%…‥。．，、！？：；）」』】〉》〕］｝”’・ー々"  # closing punctuation
    "ぁぃぅぇぉっゃゅょァィゥェォッャュョ"  # small kana
)
_NO_LINE_END = frozenset("([{（「『【〈《〔［｛“‘")
_HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF))


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
    # measured once: layout sums these instead of measuring joined text again for every candidate
    width: int = field(init=False)  # display width of `text`, spaces included
    lead: int = field(init=False)  # width of its leading space (0 or 1: whitespace is one space)
    trail: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", _width(self.text))
        object.__setattr__(self, "lead", len(self.text) - len(self.text.lstrip()))
        object.__setattr__(self, "trail", len(self.text) - len(self.text.rstrip()))


@lru_cache(maxsize=8192)
def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    """Display columns: what a line limit means on screen."""
    return sum(_char_width(char) for char in text)


@lru_cache(maxsize=8192)
def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (a line may break beside it).

    Korean is wide but spaced: it breaks at its spaces only. Emoji are wide too, but a sequence of
    them (joiners, skin tones) is one picture: they break at spaces as words do.
    """
    if unicodedata.east_asian_width(char) not in ("W", "F") or unicodedata.category(char) in ("So", "Sk"):
        return False
    return not any(low <= ord(char) <= high for low, high in _HANGUL)


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text)


def _pieces(text: str) -> list[str]:
    """The words of `text` with their leading space; each character of an unspaced script is one."""
    pieces: list[str] = []
    for word in _PIECE.findall(_one_line(text)):
        run = ""
        for char in word:
            if _char_width(char) == 0 and not run and pieces:
                pieces[-1] += char  # a combining mark stays with its base character
                continue
            if _unspaced(char) and run.strip():
                pieces.append(run)
                run = ""
            run += char
            if _unspaced(char):
                pieces.append(run)
                run = ""
        if run.strip():
            pieces.append(run)
    return pieces


def _words_of(segment: Mapping[str, Any]) -> list[_Word]:
    """The segment's words with times: its word timestamps, else its text split and timed by length."""
    start, end = float(segment["start"]), float(segment["end"])
    timed = segment.get("words")
    if timed:
        return [
            _Word(
                max(start, float(w["start"])),
                min(max(end, float(w["start"])), float(w["end"])),
                _one_line(str(w["word"])),
            )
            for w in timed
            if str(w["word"]).strip()
        ]
    pieces = _pieces(str(segment.get("text") or ""))
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


def _span_width(words: Sequence[_Word]) -> int:
    """The display width of _join(words)."""
    return sum(w.width for w in words) - words[0].lead - words[-1].trail


def _breaks_before(words: Sequence[_Word], i: int) -> bool:
    """Whether a line may break before words[i]: at a space, or beside a character of an unspaced script."""
    return words[i].text[:1].isspace() or _may_break(words[i - 1].text, words[i].text)


@lru_cache(maxsize=65536)
def _may_break(before: str, word: str) -> bool:
    first, last = word[:1], before.rstrip()[-1:]
    return (_unspaced(first) or _unspaced(last)) and first not in _NO_LINE_START and last not in _NO_LINE_END


def _wrap(words: Sequence[_Word], max_chars: int) -> list[str]:
    """Greedy line filling: a line that overflows breaks at its last place _breaks_before allows."""
    lines: list[str] = []
    start, last_break, width = 0, None, words[0].width  # width: of words[start : i + 1], spaces included
    for i in range(1, len(words)):
        width += words[i].width
        if _breaks_before(words, i):
            last_break = i
        if last_break is not None and width - words[start].lead - words[i].trail > max_chars:
            lines.append(_join(words[start:last_break]))
            width -= sum(w.width for w in words[start:last_break])
            start, last_break = last_break, None
    lines.append(_join(words[start:]))
    return lines


def _layout(words: Sequence[_Word], max_chars: int, max_lines: int) -> tuple[str, ...] | None:
    """The lines for `words` (two lines balanced), or None when they need more than max_lines lines.

    A run with no break in it (one very long word) stays on one line, even past max_chars.
    """
    if _span_width(words) <= max_chars:
        return (_join(words),)
    lines = _wrap(words, max_chars)
    if len(lines) > max_lines:
        return None
    if len(lines) == 2:  # the most even split (a pyramid reads better than a full line and a stub)
        best: tuple[int, int] | None = None  # (difference, where the second line starts)
        total, before = sum(w.width for w in words), 0
        for i in range(1, len(words)):
            before += words[i - 1].width
            if not _breaks_before(words, i):
                continue
            first = before - words[0].lead - words[i - 1].trail
            second = total - before - words[i].lead - words[-1].trail
            if first <= max_chars and second <= max_chars and (best is None or abs(first - second) < best[0]):
                best = (abs(first - second), i)
        if best is not None:
            return _join(words[: best[1]]), _join(words[best[1] :])
    return tuple(lines)


def _groups(words: list[_Word], max_chars: int, max_lines: int, max_seconds: float) -> list[list[_Word]]:
    """Greedy: add words while they fit; a sentence end closes a cue that already fills a line."""
    groups: list[list[_Word]] = []
    current: list[_Word] = []
    for word in words:
        too_long = current and word.end - current[0].start > max_seconds
        if current and (too_long or _layout([*current, word], max_chars, max_lines) is None):
            groups.append(current)
            current = []
        current = [*current, word]
        if _ends_sentence(current) and _span_width(current) >= max_chars:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _ends_sentence(words: Sequence[_Word]) -> bool:
    return words[-1].text.rstrip().endswith(_SENTENCE_END)


def _balanced(
    words: list[_Word], max_chars: int, max_lines: int, max_seconds: float
) -> list[list[_Word]] | None:
    """`words` as two cues of even width, each laid out and timed within the limits; None if none.

    Greedy filling leaves the end of a segment as a stub: a word or two flashed up for a fraction of
    a second, too fast to read. Two even cues share the segment's time instead.
    """
    total, before, candidates = sum(w.width for w in words), 0, []
    for i in range(1, len(words)):
        before += words[i - 1].width
        if _breaks_before(words, i):
            left = before - words[0].lead - words[i - 1].trail  # _span_width of each side
            right = total - before - words[i].lead - words[-1].trail
            candidates.append((abs(left - right), i))
    for _, i in sorted(candidates):  # the most even first: the first that fits is the one
        first, second = words[:i], words[i:]
        if first[-1].end - first[0].start > max_seconds or second[-1].end - second[0].start > max_seconds:
            continue
        if (
            _layout(first, max_chars, max_lines) is not None
            and _layout(second, max_chars, max_lines) is not None
        ):
            return [first, second]
    return None


def _spoken_runs(words: list[_Word], max_gap: float) -> list[list[_Word]]:
    """`words` cut where the next word starts more than max_gap seconds after the last one ended.

    Whisper's segments run across pauses ("Hello" ... 5 s ... "world"): one cue for both kept "Hello"
    on screen through the silence. Only word timestamps show a pause; text timed by length has none.
    """
    runs: list[list[_Word]] = []
    for word in words:
        if runs and word.start - runs[-1][-1].end <= max_gap:
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs


def _segment_cues(
    words: list[_Word], max_chars: int, max_lines: int, max_seconds: float, max_gap: float
) -> Iterable[tuple[float, float, tuple[str, ...]]]:
    """The segment's cues: cut at its pauses, each stretch of speech filled greedily, its last two
    shared out evenly (unless a sentence ends the first of them), each lasting at most max_seconds (a
    word whisper stretched over silence or music would stay on screen for all of it)."""
    for run in _spoken_runs(words, max_gap):
        yield from _run_cues(run, max_chars, max_lines, max_seconds)


def _run_cues(
    words: list[_Word], max_chars: int, max_lines: int, max_seconds: float
) -> Iterable[tuple[float, float, tuple[str, ...]]]:
    groups = _groups(words, max_chars, max_lines, max_seconds)
    if len(groups) >= 2 and not _ends_sentence(groups[-2]):
        groups[-2:] = _balanced(groups[-2] + groups[-1], max_chars, max_lines, max_seconds) or groups[-2:]
    for group in groups:
        start = group[0].start
        yield (
            start,
            min(group[-1].end, start + max_seconds),
            _layout(group, max_chars, max_lines) or (_join(group),),
        )


def build_cues(
    segments: Iterable[Mapping[str, Any]],
    *,
    max_chars: int = MAX_CHARS,
    max_lines: int = MAX_LINES,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    max_gap: float = MAX_GAP,
) -> list[Cue]:
    """Cues for segments ({start, end, text, words?}) in time order, timed in milliseconds."""
    raw: list[tuple[int, float, int, tuple[str, ...]]] = []  # start, its segment's end, end, lines
    for segment in segments:
        words = _words_of(segment)
        for start, end, lines in _segment_cues(words, max_chars, max_lines, max_seconds, max_gap):
            raw.append((round(start * 1000), float(segment["end"]), round(end * 1000), lines))
    # cues starting together (the channels of a split transcription all start at 0): the one of the
    # segment that ends first goes first, so each is shown while it is spoken; the other, pushed, still
    # ends when its words do. A segment's own cues keep their order (the same end; the sort is stable).
    raw.sort(key=lambda cue: cue[:2])
    cues: list[Cue] = []
    min_ms = round(min_seconds * 1000)
    for i, (start, _, end, lines) in enumerate(raw):
        pushed = bool(cues) and start < cues[-1].end_ms
        if pushed:
            start = cues[-1].end_ms
        next_start = raw[i + 1][0] if i + 1 < len(raw) else None
        end = max(end, start + min_ms)  # readable: at least min_seconds ...
        if next_start is not None and next_start > start:
            # ... unless the next cue starts sooner: no overlap. A cue already pushed late (speech
            # overlapping it) keeps min_seconds and pushes the next in turn: cut, it would only flash up
            end = min(end, max(next_start, start + min_ms) if pushed else next_start)
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
    """No `-->` left (an arrow inside text reads as a timing line): `--->` gives `-->` after one pass."""
    while "-->" in line:
        line = line.replace("-->", "->")
    return line


# joins a character to the next without showing anything: after `<` or `\` it keeps players from
# reading a tag (`<i>`) or an escape (`\N`) there
_ZWJ = "\u200d"
_SRT_MARKUP = str.maketrans({"<": "<" + _ZWJ, "\\": "\\" + _ZWJ, "{": "\uff5b", "}": "\uff5d"})
EMPTY_SRT = "1\n00:00:00,000 --> 00:00:00,001\n\n"


def _srt_text(line: str) -> str:
    """A line of cue text that SRT players show as written, not as markup they act on.

    SRT has no escapes, and players read markup in it: VLC, ffmpeg (so mpv and ffmpeg's burn-in) and
    editors take `<i>`, `<b>`, `<u>`, `<font ...>` as styling and hide any other `<tag>`; they hide
    `{\\an8}`-style overrides and `{Y:i}`; VLC and libass turn `\\N`, `\\n`, `\\h` into breaks and
    spaces. `&lt;` is no way out: neither ffmpeg nor VLC decodes it in SRT (it shows as written). So:
    - `<` and `\\` get a zero-width joiner after them: invisible, no break opportunity, and a tag
      (`<` then a letter or `/`) or an escape (`\\` then a letter) is no longer there to read;
    - `{` `}` become their fullwidth forms `｛` `｝`: libass (mpv, ffmpeg) takes any `{...}` for an
      override block, whatever follows the `{`, so no invisible mark saves it; the lookalike shows the
      words, where a literal brace would hide them.
    """
    return _safe(line).translate(_SRT_MARKUP)


def to_srt(cues: Sequence[Cue]) -> str:
    """The SRT document; no cues give EMPTY_SRT, one cue with no text, not an empty file.

    ffmpeg cannot tell an empty file's format ("Invalid data found when processing input"): `ffmpeg -i
    clip.mp4 -i clip.srt ...` stopped a batch at every silent clip, and tools that refuse an empty
    upload refused it. A cue of 1 ms without text is read as SRT and shows nothing (ffmpeg drops it:
    the subtitle track it muxes has no events).
    """
    if not cues:
        return EMPTY_SRT
    blocks = [
        f"{n}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n"
        + "\n".join(_srt_text(line) for line in c.lines)
        for n, c in enumerate(cues, start=1)
    ]
    return "\n\n".join(blocks) + "\n"


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
