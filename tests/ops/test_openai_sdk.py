"""The official `openai` package against the real stack: every response_format, both granularities.

base_url = the API's /v1, api_key = a Cliptext API key; the work goes API -> Redis -> worker ->
inference server and back, and each request is an ordinary transcription listed by the Cliptext API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import jiwer
import openai
import pytest

from tests.jobs.stack import Proc, Stack
from tests.media import AUDIO_DIR

JFK = AUDIO_DIR / "jfk.mp3"
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def reference() -> str:
    return words(json.loads((AUDIO_DIR / "transcripts.json").read_text())["jfk.mp3"]["text"])


@pytest.fixture
def client(ops_stack: Stack, worker: Proc) -> Iterator[openai.OpenAI]:
    # closed after the test: an unclosed client's sockets, collected later, fail the run (ResourceWarning)
    with _client(ops_stack, ops_stack.api_key) as client:
        yield client


def _client(ops_stack: Stack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=f"{ops_stack.api_url}/v1", max_retries=0)


def _transcribe(client: openai.OpenAI, **params):
    with JFK.open("rb") as handle:
        return client.audio.transcriptions.create(model="whisper-1", file=handle, timeout=180, **params)


def test_models_lists_the_loaded_model(client: openai.OpenAI, ops_stack: Stack) -> None:
    models = client.models.list()
    name = json.loads((ops_stack.model_dir / "config.json").read_text())["name"]
    assert [m.id for m in models.data] == [name]
    model = models.data[0]
    assert model.object == "model" and model.owned_by == "cliptext" and isinstance(model.created, int)
    assert client.models.retrieve(model.id).id == model.id


def test_json_is_listed_as_an_ordinary_transcription(
    client: openai.OpenAI, ops_stack: Stack, reference: str
) -> None:
    result = _transcribe(client, language="en")
    assert jiwer.wer(reference, words(result.text)) <= 0.05, result.text
    newest = ops_stack.http("GET", "/v1/transcriptions?limit=1").json()["data"][0]
    assert newest["status"] == "completed" and newest["text"] == result.text


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_formats(client: openai.OpenAI, reference: str, fmt: str) -> None:
    body = _transcribe(client, response_format=fmt)
    assert isinstance(body, str)
    if fmt == "srt":
        assert re.match(rf"1\n{SRT_TIME} --> {SRT_TIME}\n\S", body), body
        lines = body.splitlines()
        text = " ".join(line for line in lines if line and "-->" not in line and not line.isdigit())
    elif fmt == "vtt":
        assert re.match(rf"WEBVTT\n\n{VTT_TIME} --> {VTT_TIME}\n\S", body), body
        text = " ".join(line for line in body.splitlines()[1:] if line and "-->" not in line)
    else:
        text = body
    assert jiwer.wer(reference, words(text)) <= 0.05, body
    if fmt != "text":  # cues: at most 2 lines of 42 characters, in order, never overlapping
        cues = [block.splitlines() for block in body.split("\n\n") if "-->" in block]
        times = [next(line for line in cue if "-->" in line).split(" --> ") for cue in cues]
        for cue in cues:
            lines = cue[cue.index(next(line for line in cue if "-->" in line)) + 1 :]
            assert 1 <= len(lines) <= 2 and all(len(line) <= 42 for line in lines), cue
        assert all(end > start for start, end in times)
        assert all(times[i][1] <= times[i + 1][0] for i in range(len(times) - 1)), times


def test_verbose_json_segments_and_words(client: openai.OpenAI, reference: str) -> None:
    result = _transcribe(client, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.language == "english" and result.duration == pytest.approx(11.0, abs=0.2)
    assert jiwer.wer(reference, words(result.text)) <= 0.05
    assert result.segments and result.words
    first = result.segments[0]
    assert first.id == 0 and first.start < first.end and first.tokens and first.avg_logprob < 0
    assert 0 <= first.no_speech_prob <= 1 and first.compression_ratio > 0
    assert words(" ".join(w.word for w in result.words)) == words(result.text)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end <= result.duration + 0.5


def test_verbose_json_segments_only(client: openai.OpenAI) -> None:
    result = _transcribe(client, response_format="verbose_json", timestamp_granularities=["segment"])
    assert result.segments and not getattr(result, "words", None)


def test_errors_come_in_openai_shape(client: openai.OpenAI, ops_stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        _transcribe(client, response_format="text", timestamp_granularities=["word"])
    assert bad.value.status_code == 400 and bad.value.body["param"] == "timestamp_granularities[]"
    with _client(ops_stack, "ct_not-a-key") as stranger, pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.code == "invalid_api_key"


def test_what_cannot_be_answered_is_refused_before_anything_is_stored(
    client: openai.OpenAI, ops_stack: Stack
) -> None:
    """stream=true made the SDK wait for server-sent events and return an empty stream (the transcript
    lost, no error); a language the English-only model does not know stored the upload and failed the
    job; whisper-1 was a 404 `not_found` where OpenAI says `model_not_found`."""
    import requests

    def listed() -> int:
        answer = requests.get(
            f"{ops_stack.api_url}/v1/transcriptions?limit=100",
            headers={"Authorization": f"Bearer {ops_stack.api_key}"},
            timeout=10,
        )
        return len(answer.json()["data"])

    before = listed()
    with pytest.raises(openai.BadRequestError) as streamed:
        _transcribe(client, stream=True)
    assert streamed.value.body["param"] == "stream"
    for language in ("fr", "xx"):
        with pytest.raises(openai.BadRequestError) as foreign:
            _transcribe(client, language=language)
        assert foreign.value.body["param"] == "language"
        assert "English-only" in foreign.value.body["message"]
    with JFK.open("rb") as handle:  # the native API asks the same before storing
        native = requests.post(
            f"{ops_stack.api_url}/v1/transcriptions",
            headers={"Authorization": f"Bearer {ops_stack.api_key}"},
            files={"file": ("jfk.mp3", handle, "audio/mpeg")},
            data={"language": "fr"},
            timeout=30,
        )
    assert native.status_code == 422 and native.json()["error"]["details"]["field"] == "language"
    assert listed() == before
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4")  # whisper-1 answers: what OpenAI clients send
    assert missing.value.code == "model_not_found"
