"""Whole transcriptions through the SDK and the CLI: API + real inference server (tiny.en) + RQ worker."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cliptext.cli import EXIT_API_ERROR, EXIT_FAILED, EXIT_OK
from cliptext.sdk import Client
from tests.sdk.conftest import AUDIO, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def jfk_words() -> list[str]:
    truth = json.loads((AUDIO / "transcripts.json").read_text())["jfk.mp3"]["text"]
    return words(truth)


@pytest.fixture
def org(make_org: Callable[..., Org]) -> Org:
    return make_org("enterprise")


def test_sdk_transcribe_waits_for_the_transcript(pipeline: ApiServer, org: Org, jfk_words: list[str]) -> None:
    sdk = Client(api_key=org.key, base_url=pipeline.base_url)
    statuses: list[str] = []
    created = sdk.transcribe(AUDIO / "jfk.mp3", wait=False, language="en")
    assert created.status == "queued"
    done = sdk.wait(created.id, timeout=180, poll_interval=0.2, on_update=lambda t: statuses.append(t.status))
    assert done.status == "completed" and done.error is None, done.raw
    assert words(done.text or "") == jfk_words
    assert done.duration == pytest.approx(11.0, abs=0.3) and done.language == "en"
    assert done.segments and done.segments[0].start == pytest.approx(0.0, abs=1.0)
    assert done.segments[-1].end == pytest.approx(done.duration, abs=1.0)
    assert statuses[-1] == "completed" and set(statuses) <= {"queued", "processing", "completed"}

    again = sdk.transcribe(AUDIO / "jfk.flac", timeout=180, word_timestamps=True)
    assert again.status == "completed" and words(again.text or "") == jfk_words
    first_words = again.segments[0].words
    assert first_words and first_words[0].word.strip().lower().startswith("and")
    assert all(w.start <= w.end for s in again.segments for w in s.words)

    text = sdk.get_transcription(again.id, "text")
    assert isinstance(text, str) and words(text) == jfk_words
    srt = sdk.get_transcription(again.id, "srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt and "country" in srt
    vtt = sdk.get_transcription(again.id, "vtt")
    assert vtt.startswith("WEBVTT") and "country" in vtt
    verbose = sdk.get_transcription(again.id, "verbose_json", timestamp_granularities=("segment", "word"))
    assert (verbose.id, verbose.status, verbose.language) == (again.id, "completed", "en")
    assert [segment.id for segment in verbose.segments] == list(range(len(again.segments)))
    assert words(" ".join(w.word for w in verbose.words)) == jfk_words
    assert "task" in verbose.raw and "id" not in verbose.raw, ".raw is the server's body as sent"


def test_cli_wait_prints_the_transcript(
    pipeline: ApiServer, run_cli: Run, org: Org, jfk_words, tmp_path: Path
):
    done = run_cli(org.key, "transcribe", str(AUDIO / "jfk.mp3"), "--wait", "--timeout", "180")
    assert done.returncode == EXIT_OK, done.stderr
    assert words(done.stdout) == jfk_words

    out = tmp_path / "out"
    done = run_cli(
        org.key, "transcribe", str(AUDIO / "jfk.mp3"), "--wait", "--format", "json", "-o", str(out)
    )
    assert done.returncode == EXIT_OK, done.stderr
    body = json.loads((out / "jfk.json").read_text())
    assert body["status"] == "completed" and words(body["text"]) == jfk_words

    done = run_cli(org.key, "transcribe", str(AUDIO / "jfk.mp3"), "--wait", "--format", "srt")
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.startswith("1\n00:00:00,") and "country" in done.stdout
    listed = run_cli(org.key, "list", "--status", "completed", "--limit", "1")
    transcription_id = listed.stdout.split("\t")[0]
    vtt = run_cli(org.key, "get", transcription_id, "--format", "vtt")
    assert vtt.returncode == EXIT_OK and vtt.stdout.startswith("WEBVTT")
    verbose = run_cli(org.key, "get", transcription_id, "--format", "verbose_json")
    assert verbose.returncode == EXIT_OK and json.loads(verbose.stdout)["task"] == "transcribe"
    no_words = run_cli(org.key, "get", transcription_id, "--format", "verbose_json", "--words")
    assert no_words.returncode == EXIT_API_ERROR and "CONFLICT" in no_words.stderr  # made without words


def test_cli_exits_3_when_a_transcription_fails(pipeline: ApiServer, run_cli: Run, org: Org, tmp_path: Path):
    # a real MP3 header (passes the API's probe) followed by zeros: the worker cannot decode it
    corrupt = tmp_path / "corrupt.mp3"
    data = (AUDIO / "jfk.mp3").read_bytes()
    corrupt.write_bytes(data[:8000] + bytes(len(data) - 8000))
    done = run_cli(org.key, "transcribe", str(corrupt), str(AUDIO / "jfk.mp3"), "--wait", "--timeout", "180")
    assert done.returncode == EXIT_FAILED, done.stderr
    assert "AUDIO_DECODE_ERROR" in done.stderr and "corrupt.mp3" in done.stderr
    assert "country" in done.stdout, "the other file's transcript is still printed"


def test_cli_prints_the_words_of_a_word_timestamps_transcription(
    pipeline: ApiServer, run_cli: Run, org: Org, jfk_words: list[str]
) -> None:
    """--word-timestamps then verbose_json: `transcribe --wait` and `wait` ask for the words too."""
    done = run_cli(
        org.key,
        "transcribe",
        str(AUDIO / "jfk.mp3"),
        "--word-timestamps",
        "--wait",
        "--format",
        "verbose_json",
        "--timeout",
        "180",
    )
    assert done.returncode == EXIT_OK, done.stderr
    body = json.loads(done.stdout)
    assert words(" ".join(w["word"] for w in body["words"])) == jfk_words
    transcription_id = run_cli(org.key, "list", "--limit", "1").stdout.split("\t")[0]
    waited = run_cli(org.key, "wait", transcription_id, "--format", "verbose_json")
    assert waited.returncode == EXIT_OK, waited.stderr
    assert json.loads(waited.stdout)["words"] == body["words"]
