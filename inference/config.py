"""`ModelConfig`: everything the runtime needs to know about an exported model, kept in config.json.

Written by the exporter, read by the runtime and the decoding loop; frozen so threads can share it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CONFIG_FILE = "config.json"
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    # dimensions (as openai/whisper ModelDimensions)
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    # special tokens
    sot: int
    eot: int
    sot_prev: int
    sot_lm: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    transcribe: int
    translate: int
    lang_ids: tuple[int, ...]
    language_codes: tuple[str, ...]  # same order as lang_ids
    suppress_ids: tuple[int, ...]
    suppress_ids_begin: tuple[int, ...]
    alignment_heads: tuple[tuple[int, int], ...]  # (decoder layer, head)
    is_multilingual: bool
    precisions: tuple[str, ...]  # exported precisions available in the directory
    fingerprint: str  # source model + exporter version; the exporter skips work when it matches

    @property
    def head_dim(self) -> int:
        return self.n_text_state // self.n_text_head

    @property
    def languages(self) -> dict[str, int]:
        """Language code -> token id."""
        return dict(zip(self.language_codes, self.lang_ids, strict=True))

    @property
    def sot_sequence(self) -> tuple[int, ...]:
        """The start sequence for English transcription (multilingual models add language and task)."""
        if not self.is_multilingual:
            return (self.sot,)
        return (self.sot, self.languages["en"], self.transcribe)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        values = {}
        for f in fields(cls):
            value = data[f.name]
            if f.name == "alignment_heads":
                value = tuple(tuple(int(x) for x in pair) for pair in value)
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    def save(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads((Path(model_dir) / CONFIG_FILE).read_text()))
