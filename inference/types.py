"""Options and results of a transcription: frozen dataclasses, validated once.

Shared by the engine, the gRPC server and its clients; nothing here is mutated during a call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# whisper's decoder context: prompt and new tokens of one window together (every model size)
MAX_TOKENS = 448
MAX_TEMPERATURES = 16
MAX_SUPPRESSED = 4096


class EngineError(Exception):
    """A transcription that cannot be done, with a code from cliptext.errors.ErrorCode."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class AudioError(EngineError):
    """Audio that cannot be decoded: empty, not audio, truncated, no audio stream, too long."""


class Stopped(Exception):
    """`stop()` said the caller has gone while a long file was being read, before any segment."""


class OptionsError(EngineError, ValueError):
    """An option outside its allowed values."""

    def __init__(self, message: str):
        super().__init__("VALIDATION_ERROR", message)


@dataclass(frozen=True)
class TranscribeOptions:
    # language code ("en"); None detects it (multilingual models) or uses "en" (.en models)
    language: str | None = None
    # "transcribe" or "translate" (to English, multilingual models only)
    task: str = "transcribe"
    # 1 is greedy decoding; >1 is beam search with that many beams
    beam_size: int = 5
    # candidates sampled at temperature > 0 during fallback
    best_of: int = 5
    # beam search: stop after patience * beam_size finished candidates
    patience: float = 1.0
    # beam ranking divides the sum logprob by length**length_penalty (None means 1), as faster-whisper does
    length_penalty: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    # temperatures tried in order when a window fails the thresholds below
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    prompt_reset_on_temperature: float = 0.5
    initial_prompt: str | None = None
    prefix: str | None = None
    suppress_blank: bool = True
    # -1 means the model's non-speech symbol set
    suppress_tokens: tuple[int, ...] = (-1,)
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    word_timestamps: bool = False
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"
    # "mix" averages channels into one; "split" transcribes each channel on its own
    channels: str = "mix"
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        """Every value the decoder could not use is refused here, before any audio is read: NaN and
        infinities included (they crashed deep in the decoder, or decoded nonsense)."""
        if self.task not in ("transcribe", "translate"):
            raise OptionsError(f"task must be 'transcribe' or 'translate', not {self.task!r}")
        if not 1 <= self.beam_size <= 16:
            raise OptionsError("beam_size must be between 1 and 16")
        if not 1 <= self.best_of <= 16:
            raise OptionsError("best_of must be between 1 and 16")
        _check_range("patience", self.patience, 0.0, 16.0, low_open=True)
        if self.length_penalty is not None:
            _check_range("length_penalty", self.length_penalty, 0.0, 10.0)
        _check_range("repetition_penalty", self.repetition_penalty, 0.0, 10.0, low_open=True)
        if not 0 <= self.no_repeat_ngram_size <= MAX_TOKENS:
            raise OptionsError(f"no_repeat_ngram_size must be between 0 and {MAX_TOKENS}")
        # each temperature is one more decoding of a window that fails the thresholds
        if not 1 <= len(self.temperatures) <= MAX_TEMPERATURES:
            raise OptionsError(f"temperatures must list 1 to {MAX_TEMPERATURES} values")
        if any(not 0.0 <= t <= 1.0 for t in self.temperatures):
            raise OptionsError("temperatures must be between 0 and 1")
        for name in ("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise OptionsError(f"{name} must be a finite number (or disabled)")
        _check_range("prompt_reset_on_temperature", self.prompt_reset_on_temperature, 0.0, 1.0)
        _check_range("max_initial_timestamp", self.max_initial_timestamp, 0.0, 30.0)
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= MAX_TOKENS:
            raise OptionsError(f"max_new_tokens must be between 1 and {MAX_TOKENS}")
        if any(t < -1 for t in self.suppress_tokens):
            raise OptionsError("suppress_tokens takes token ids (>= 0) and -1 (the non-speech symbols)")
        if len(self.suppress_tokens) > MAX_SUPPRESSED:
            raise OptionsError(f"suppress_tokens takes at most {MAX_SUPPRESSED} token ids")
        if self.channels not in ("mix", "split"):
            raise OptionsError("channels must be 'mix' or 'split'")


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """`value` finite and within [low, high] ((low, high] with `low_open`)."""
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        opening = "(" if low_open else "["
        raise OptionsError(f"{name} must be in {opening}{low:g}, {high:g}], not {value!r}")


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: tuple[Word, ...] | None = None
    # index of the audio channel with channels="split", else 0
    channel: int = 0


@dataclass(frozen=True)
class TranscriptionInfo:
    language: str
    language_probability: float
    duration: float
    options: TranscribeOptions
    channels: int = 1
    all_language_probs: tuple[tuple[str, float], ...] | None = field(default=None, repr=False)
