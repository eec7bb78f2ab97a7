"""What clients written for OpenAI send and read, found by a review against OpenAI's API: `usage`,
`models.retrieve("whisper-1")`, prompts longer than 1,000 characters (the transcript so far), `.oga`
files, and error messages in words (not Python reprs). The real stack, through the `openai` package."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from api.blueprints.openai import PROMPT_TAIL, prompt_tail
from inference.audio import decode_audio
from tests.jobs.stack import Proc, Stack
from tests.media import AUDIO_DIR, encode_audio

JFK = AUDIO_DIR / "jfk.mp3"


@pytest.fixture
def client(ops_stack: Stack, worker: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=ops_stack.api_key, base_url=f"{ops_stack.api_url}/v1", max_retries=0) as sdk:
        yield sdk


def test_usage_is_the_audios_length(client: openai.OpenAI) -> None:
    with JFK.open("rb") as handle:
        plain = client.audio.transcriptions.create(model="whisper-1", file=handle, timeout=180)
    assert plain.usage is not None and plain.usage.type == "duration"
    assert plain.usage.seconds == pytest.approx(11.0, abs=0.2)
    with JFK.open("rb") as handle:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=handle, response_format="verbose_json", timeout=180
        )
    assert verbose.usage is not None and verbose.usage.seconds == pytest.approx(verbose.duration, abs=0.01)


def test_whisper_1_is_a_model_that_exists(client: openai.OpenAI, ops_stack: Stack) -> None:
    """OpenAI clients check the model they send; every transcription sent as whisper-1 runs."""
    model = client.models.retrieve("whisper-1")
    assert model.id == "whisper-1" and model.owned_by == "cliptext"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_a_prompt_of_the_transcript_so_far_is_taken_by_its_end(client: openai.OpenAI) -> None:
    earlier = "We talked about budgets and then about the launch. " * 60  # 3,060 characters
    with JFK.open("rb") as handle:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=handle, prompt=earlier + "And so", timeout=180
        )
    assert "country" in result.text.lower()


def test_prompt_tail_keeps_the_end_from_a_words_start() -> None:
    assert prompt_tail(None) is None and prompt_tail("short") == "short"
    long = " ".join(f"word{i}" for i in range(1000))
    tail = prompt_tail(long)
    assert len(tail) <= PROMPT_TAIL and long.endswith(tail) and tail.startswith("word")
    assert long[len(long) - len(tail) - 1] == " "  # no word cut in half
    unbroken = "x" * 5000
    assert prompt_tail(unbroken) == "x" * PROMPT_TAIL


def test_an_oga_file_is_transcribed(client: openai.OpenAI, tmp_path) -> None:
    """Ogg audio under the name Telegram gives voice notes, and OpenAI takes."""
    oga = encode_audio(tmp_path / "voice.oga", decode_audio(JFK, 48000), 48000, "libopus", "ogg")
    with oga.open("rb") as handle:
        result = client.audio.transcriptions.create(model="whisper-1", file=handle, timeout=180)
    assert "country" in result.text.lower()


def test_refusals_say_why_in_words(client: openai.OpenAI) -> None:
    with JFK.open("rb") as handle, pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=handle,
            response_format="verbose_json",
            timestamp_granularities=["sentence"],  # type: ignore[list-item]
        )
    message = refused.value.body["message"]
    assert message == "Invalid value for timestamp_granularities[]: Must be one of: segment, word.", message
    assert "{" not in message and "[" not in message.split(":", 1)[1]
    body = json.dumps(refused.value.body)
    assert "Traceback" not in body


def test_translation_says_it_is_not_supported(client: openai.OpenAI) -> None:
    """A 404 read as a wrong base URL; the 400 says what is and is not there. (The SDK calls the endpoint
    deprecated, and says so.)"""
    with (
        JFK.open("rb") as handle,
        pytest.raises(openai.BadRequestError) as refused,
        pytest.warns(DeprecationWarning),
    ):
        client.audio.translations.create(model="whisper-1", file=handle)
    assert refused.value.body["message"].startswith("Translation is not supported"), refused.value.body
    assert refused.value.body["param"] == "model"
