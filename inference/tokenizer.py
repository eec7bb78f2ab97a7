"""Whisper's text tokenizer: special tokens, the start sequence, and word splitting for word timestamps.

A thin layer over HF `tokenizers` (tokenizer.json of the model directory), behaving like faster-whisper's
`Tokenizer`. Special token ids come from the model config when one is given, else from tokenizer.json.
Immutable after construction, so threads can share one instance.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import tokenizers

TASKS = ("transcribe", "translate")
# Languages written without spaces between words: split words where tokens decode to whole characters.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
TIMESTAMP_STEP = 0.02  # seconds per timestamp token
_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of whisper's special tokens; `languages` maps language codes to their token ids."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    languages: dict[str, int]

    @classmethod
    def from_tokenizer(cls, tokenizer: tokenizers.Tokenizer) -> SpecialTokens:
        """Read the ids from the vocabulary itself (what faster-whisper does)."""

        def token(text: str) -> int:
            token_id = tokenizer.token_to_id(text)
            if token_id is None:
                raise ValueError(f"tokenizer.json has no {text} token: not a whisper tokenizer")
            return token_id

        sot, translate = token("<|startoftranscript|>"), token("<|translate|>")
        no_speech = tokenizer.token_to_id("<|nospeech|>") or token("<|nocaptions|>")
        languages = {}
        for token_id in range(sot + 1, translate):
            match = _LANGUAGE_TOKEN.fullmatch(tokenizer.id_to_token(token_id) or "")
            if match:
                languages[match.group(1)] = token_id
        no_timestamps = token("<|notimestamps|>")
        return cls(
            eot=token("<|endoftext|>"),
            sot=sot,
            translate=translate,
            transcribe=token("<|transcribe|>"),
            sot_lm=token("<|startoflm|>"),
            sot_prev=token("<|startofprev|>"),
            no_speech=no_speech,
            no_timestamps=no_timestamps,
            timestamp_begin=no_timestamps + 1,
            languages=languages,
        )

    @classmethod
    def from_config(cls, config: object) -> SpecialTokens:
        """From any object with these attributes (inference.config.ModelConfig has them all)."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if f.name != "languages"}
        languages = getattr(config, "languages", None)
        if languages is None:
            languages = dict(zip(config.language_codes, config.lang_ids, strict=True))
        return cls(**{k: int(v) for k, v in values.items()}, languages=dict(languages))


class Tokenizer:
    """Encode/decode text and build the decoder prompt for one (task, language) of one model."""

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        multilingual: bool,
        task: str | None = "transcribe",
        language: str | None = None,
        special: SpecialTokens | None = None,
    ):
        self.tokenizer = tokenizer
        self.special = special or SpecialTokens.from_tokenizer(tokenizer)
        self.multilingual = multilingual
        if multilingual:
            if task not in TASKS:
                raise ValueError(f"{task!r} is not a valid task (accepted: {', '.join(TASKS)})")
            if language not in self.special.languages:
                raise ValueError(f"{language!r} is not a language code this model knows")
            self.task: int | None = getattr(self.special, task)
            self.language: int | None = self.special.languages[language]
            self.language_code = language
        else:
            self.task = None
            self.language = None
            self.language_code = "en"

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        multilingual: bool,
        task: str | None = "transcribe",
        language: str | None = None,
        config: object | None = None,
    ) -> Tokenizer:
        """Load tokenizer.json (or the model directory holding it); ids from `config` when given."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
        special = SpecialTokens.from_config(config) if config is not None else None
        return cls(tokenizer, multilingual, task, language, special)

    @property
    def eot(self) -> int:
        return self.special.eot

    @property
    def sot(self) -> int:
        return self.special.sot

    @property
    def sot_prev(self) -> int:
        return self.special.sot_prev

    @property
    def sot_lm(self) -> int:
        return self.special.sot_lm

    @property
    def no_speech(self) -> int:
        return self.special.no_speech

    @property
    def no_timestamps(self) -> int:
        return self.special.no_timestamps

    @property
    def timestamp_begin(self) -> int:
        return self.special.timestamp_begin

    @property
    def transcribe(self) -> int:
        return self.special.transcribe

    @property
    def translate(self) -> int:
        return self.special.translate

    @property
    def sot_sequence(self) -> tuple[int, ...]:
        """The decoder prompt: start of transcript, then language and task on multilingual models."""
        sequence = [self.special.sot]
        if self.language is not None:
            sequence.append(self.language)
        if self.task is not None:
            sequence.append(self.task)
        return tuple(sequence)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """Text of the tokens, special and timestamp tokens left out."""
        eot = self.special.eot
        return self.tokenizer.decode([token for token in tokens if token < eot])

    def decode_with_timestamps(self, tokens: list[int]) -> str:
        """Text with timestamp tokens written as <|1.08|>."""
        begin = self.special.timestamp_begin
        parts: list[str] = []
        text_tokens: list[int] = []
        for token in tokens:
            if token >= begin:
                parts.append(self.tokenizer.decode(text_tokens))
                parts.append(f"<|{(token - begin) * TIMESTAMP_STEP:.2f}|>")
                text_tokens = []
            else:
                text_tokens.append(token)
        parts.append(self.tokenizer.decode(text_tokens))
        return "".join(parts)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of speaker tags and sound annotations (♪, [MUSIC], (laughs)...) to suppress while decoding.

        Basic punctuation stays; hyphens and quotes stay between words but not at a word's start.
        """
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += [
            "<<",
            ">>",
            "<<<",
            ">>>",
            "--",
            "---",
            "-(",
            "-[",
            "('",
            '("',
            "((",
            "))",
            "(((",
            ")))",
            "[[",
            "]]",
            "{{",
            "}}",
            "♪♪",
            "♪♪♪",
        ]
        # U+2640..U+267F symbols share their first two UTF-8 bytes: suppressing the first token is safe
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Words and the tokens of each: at spaces, or at character boundaries for zh/ja/th/lo/my/yue."""
        if self.language_code in NO_SPACE_LANGUAGES:
            return self.split_tokens_on_unicode(tokens)
        return self.split_tokens_on_spaces(tokens)

    def split_tokens_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Cut wherever the tokens so far decode to whole characters (no U+FFFD left dangling)."""
        decoded_full = self.decode_with_timestamps(tokens)
        replacement = "\ufffd"
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for token in tokens:
            current.append(token)
            decoded = self.decode_with_timestamps(current)
            index = decoded.find(replacement)
            if index < 0 or (
                index + offset < len(decoded_full) and decoded_full[index + offset] == replacement
            ):
                words.append(decoded)
                word_tokens.append(current)
                current = []
                offset += len(decoded)
        return words, word_tokens

    def split_tokens_on_spaces(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """A new word at each leading space, punctuation mark or special token."""
        subwords, subword_tokens = self.split_tokens_on_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, sub_tokens in zip(subwords, subword_tokens, strict=True):
            special = sub_tokens[0] >= self.special.eot
            with_space = subword.startswith(" ")
            punctuation = subword.strip() in string.punctuation
            if special or with_space or punctuation or not words:
                words.append(subword)
                word_tokens.append(list(sub_tokens))
            else:
                words[-1] += subword
                word_tokens[-1].extend(sub_tokens)
        return words, word_tokens
