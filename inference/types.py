"""Options and results of a transcription: frozen dataclasses, validated once.

Shared by the engine, the gRPC server and its clients; nothing here is mutated during a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class EngineError(Exception):
    """A transcription that cannot be done, with a code from cliptext.errors.ErrorCode."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class AudioError(EngineError):
    """Audio that cannot be decoded: empty, not audio, truncated, no audio stream, too long."""


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
        if self.task not in ("transcribe", "translate"):
            raise OptionsError(f"task must be 'transcribe' or 'translate', not {self.task!r}")
        if not 1 <= self.beam_size <= 16:
            raise OptionsError("beam_size must be between 1 and 16")
        if not 1 <= self.best_of <= 16:
            raise OptionsError("best_of must be between 1 and 16")
        if self.patience <= 0:
            raise OptionsError("patience must be positive")
        if not self.temperatures or any(not 0.0 <= t <= 1.0 for t in self.temperatures):
            raise OptionsError("temperatures must be between 0 and 1")
        if self.channels not in ("mix", "split"):
            raise OptionsError("channels must be 'mix' or 'split'")


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
