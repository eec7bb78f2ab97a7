"""What the worker asks of the engine, from the options the API stored."""

from __future__ import annotations

import pytest

from jobs.transcribe import engine_options


@pytest.mark.parametrize(
    ("stored", "language"),
    [
        ({"language": "pt-BR"}, "pt"),
        ({"language": "zh-Hant"}, "zh"),
        ({"language": "yue"}, "yue"),
        ({}, None),
    ],
)
def test_a_region_tag_reaches_the_engine_as_its_language(stored: dict, language: str | None) -> None:
    assert engine_options(stored).language == language


def test_prompt_and_word_timestamps_are_passed_on() -> None:
    options = engine_options({"language": "en", "prompt": "JFK", "word_timestamps": True})
    assert (options.initial_prompt, options.word_timestamps) == ("JFK", True)
