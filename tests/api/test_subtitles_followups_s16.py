"""Subtitles as a video editor meets them: SRT text a player would take for markup, the SRT of an empty
transcript, several subtitle files asked for on one stdout, and a cue left up through a pause.

SRT is read back by ffmpeg's own demuxer and decoder (PyAV's libavformat/libavcodec): the reader of
ffmpeg, mpv and most editors' imports. It turns SRT into ASS for libass to draw, so the ASS text it
gives must hold no override block (`{...}`) and no escape (`\\N`, `\\h`) left for libass to act on.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from cliptext.cli import EXIT_TIMEOUT, EXIT_USAGE
from cliptext.sdk import Client
from cliptext.subtitles import EMPTY_SRT, build_cues, srt, vtt
from tests.api.test_formats_review_parsers import parse_srt, parse_vtt
from tests.sdk.conftest import AUDIO, ApiServer, Org, api_server, make_org, run_cli  # noqa: F401

Run = Callable[..., subprocess.CompletedProcess[str]]

MARKUP = [
    "<i>not italic</i> as said",
    '<font color="red">plain</font> words',
    "{\\an8}not moved to the top",
    "{Y:i} microdvd style",
    "a {comment in braces} stays",
    "<unknown>tag</unknown> shown",
    "a < b > c",
    "C:\\new\\Nfolder \\h here",
]


def _ffmpeg_reads(body: str, tmp_path: Path) -> list[str]:
    """The text of each event ffmpeg reads from an SRT file, as the ASS it hands libass. Opened the
    way `ffmpeg -i x.srt` opens it: the format found from the content."""
    path = tmp_path / "t.srt"
    path.write_bytes(body.encode("utf-8"))
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        return [
            sub.ass.decode("utf-8").split(",", 8)[8]
            for packet in container.demux(stream)
            for sub in packet.decode()
        ]


def _libass_draws_as_text(ass: str) -> bool:
    """No override block and no escape: libass takes any `{...}` as override tags (hidden, and acted
    on: `{\\an8}` moves the line), and `\\N`, `\\n`, `\\h` as a break or a hard space."""
    return "{" not in ass and not re.search(r"\\[A-Za-z{}]", ass)


def _seen(ass: str) -> str:
    """What libass shows of text that passed _libass_draws_as_text: the zero-width joiners are
    invisible and the fullwidth braces read as braces."""
    return ass.replace("\u200d", "").replace("\uff5b", "{").replace("\uff5d", "}")


def test_srt_text_that_players_read_as_markup_is_shown_as_written(tmp_path: Path) -> None:
    segments = [{"start": 2.0 * i, "end": 2.0 * i + 1.5, "text": " " + t} for i, t in enumerate(MARKUP)]
    body = srt(segments)
    events = _ffmpeg_reads(body, tmp_path)
    assert len(events) == len(MARKUP)
    for text, ass in zip(MARKUP, events, strict=True):
        assert _libass_draws_as_text(ass), (text, ass)
        assert _seen(ass) == text
    # VLC hides a tag only where a letter (after `/` and spaces) follows `<`, and a `{\...}` or `{x:...}`
    # only where the `{` is a brace; its escapes are a backslash then n, N or h
    assert not re.search("<(?!\u200d)", body) and not re.search("\\\\(?!\u200d)", body)
    assert "{" not in body and "}" not in body
    # the bytes, for an editor's import: a zero-width joiner (e2 80 8d) after `<` and `\`
    first = body.encode().split(b"\n")[2]
    assert first == b"<\xe2\x80\x8di>not italic<\xe2\x80\x8d/i> as said"
    assert "\uff5b\\\u200dan8\uff5dnot moved" in body
    # WebVTT has escapes of its own: unchanged, the text as written
    assert [cue.text.replace("\n", " ") for cue in parse_vtt(vtt(segments))] == MARKUP


def test_markup_escaping_leaves_plain_text_and_emoji_alone() -> None:
    text = " Plain words, 👩\u200d👩\u200d👧 and & &amp; 3 > 2"
    assert parse_srt(srt([{"start": 0.0, "end": 2.0, "text": text}]))[0].text == text.strip()


def test_an_empty_transcript_is_an_srt_file_ffmpeg_opens(tmp_path: Path) -> None:
    """A 0-byte .srt: `ffmpeg -i clip.srt` "Invalid data found when processing input" (it cannot tell
    the format of nothing), so a batch muxing or burning in subtitles stopped at every silent clip."""
    body = srt([])
    assert body == EMPTY_SRT
    assert _ffmpeg_reads(body, tmp_path) == []  # opened, and nothing to show
    assert srt([{"start": 1.0, "end": 2.0, "text": "   "}]) == EMPTY_SRT  # no words is no speech


def test_a_cue_ends_at_a_long_pause_between_timed_words() -> None:
    words = [
        {"word": " Hello", "start": 0.0, "end": 0.5},
        {"word": " world", "start": 6.0, "end": 6.5},
    ]
    cues = build_cues([{"start": 0.0, "end": 6.5, "text": " Hello world", "words": words}])
    # before: one cue "Hello world" on screen from 0 to 6.5 s, through 5.5 s of silence
    assert [(c.start_ms, c.end_ms, c.lines) for c in cues] == [
        (0, 1000, ("Hello",)),
        (6000, 7000, ("world",)),
    ]


def test_a_pause_cuts_a_cue_that_would_hold_both_sides_and_a_breath_does_not() -> None:
    before, after = " And so my fellow Americans", " ask not what your country can"
    timed, t = [], 0.0
    for i, piece in enumerate(re.findall(r"\s*\S+", before + after)):
        if i == 5:
            t += 1.8  # a pause past the limit
        if i == 8:
            t += 1.2  # a breath, not a pause
        timed.append({"word": piece, "start": round(t, 3), "end": round(t + 0.25, 3)})
        t += 0.3
    # 6.3 s, 57 characters: one cue of two lines by the layout rules alone (before: all of it on
    # screen through the pause)
    segment = {"start": 0.0, "end": timed[-1]["end"], "text": before + after, "words": timed}
    cues = parse_srt(srt([segment]))
    assert [c.text.replace("\n", " ") for c in cues] == [before.strip(), after.strip()]
    assert cues[0].end_ms <= round(timed[5]["start"] * 1000) == cues[1].start_ms


@pytest.fixture
def org(make_org: Callable[..., Org]) -> Org:  # noqa: F811
    return make_org("enterprise")


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_several_files_in_a_subtitle_format_on_stdout_are_refused_before_upload(
    api_server: ApiServer,  # noqa: F811
    run_cli: Run,  # noqa: F811
    org: Org,
    tmp_path: Path,
    fmt: str,
) -> None:
    """Before: both uploaded and, with --wait, printed one after the other: one .srt numbering from 1
    twice and going back to 00:00:00 (a WebVTT file with a second WEBVTT header), that no player reads.
    No worker runs here: a transcription would stay queued, so --timeout ends a wait."""
    files = [tmp_path / "a.mp3", tmp_path / "b.mp3"]
    for path in files:
        path.write_bytes((AUDIO / "jfk.mp3").read_bytes())
    sdk = Client(api_key=org.key, base_url=api_server.base_url)

    done = run_cli(org.key, "transcribe", *map(str, files), "--wait", "--format", fmt, "--timeout", "3")
    assert done.returncode == EXIT_USAGE, (done.returncode, done.stderr)
    assert "-o DIR" in done.stderr and done.stdout == ""
    assert list(sdk.list_transcriptions()) == []  # nothing uploaded, nothing queued or charged

    # one file (the same file given twice is one) still goes to stdout: waited for, not refused
    one = run_cli(
        org.key, "transcribe", str(files[0]), str(files[0]), "--wait", "--format", fmt, "--timeout", "3"
    )
    assert one.returncode == EXIT_TIMEOUT, one.stderr
    assert len(list(sdk.list_transcriptions())) == 1
