"""Pure conversions between the engine's dataclasses and the cliptext.inference.v1 messages.

Used by both the servicer and the client, so the two sides cannot disagree on a field.
"""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from inference.audio_upload import AudioFormat
from inference.pcm import MAX_CHANNELS, MAX_PCM_RATE, MIN_PCM_RATE
from inference.stubs import pb2
from inference.types import OptionsError, Segment, TranscribeOptions, Word

# trailing metadata key of a failed call: the Cliptext ErrorCode (cliptext/errors.py)
ERROR_CODE_KEY = "cliptext-error-code"
_TASKS = {
    pb2.TASK_UNSPECIFIED: "transcribe",
    pb2.TASK_TRANSCRIBE: "transcribe",
    pb2.TASK_TRANSLATE: "translate",
}
_CHANNELS = {
    pb2.CHANNEL_MODE_UNSPECIFIED: "mix",
    pb2.CHANNEL_MODE_MIX: "mix",
    pb2.CHANNEL_MODE_SPLIT: "split",
}
# optional scalar fields of TranscribeConfig with the same name and meaning as in TranscribeOptions
_SCALARS = (
    "language",
    "beam_size",
    "best_of",
    "patience",
    "length_penalty",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "condition_on_previous_text",
    "prompt_reset_on_temperature",
    "initial_prompt",
    "prefix",
    "suppress_blank",
    "without_timestamps",
    "max_initial_timestamp",
    "prepend_punctuations",
    "append_punctuations",
    "max_new_tokens",
)
_THRESHOLDS = ("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold")
_DEFAULTS = TranscribeOptions()


def reject_unknown(message, where: str) -> None:
    """Fields this server does not know would be silently ignored: refuse them instead."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({field.field_number for field in unknown})
        raise OptionsError(f"{where} has fields this server does not know: {numbers}")


def config_to_options(config: pb2.TranscribeConfig) -> TranscribeOptions:
    """TranscribeConfig -> validated TranscribeOptions; unset fields keep the engine defaults."""
    reject_unknown(config, "TranscribeConfig")
    if config.task not in _TASKS:
        raise OptionsError(f"unknown task {config.task}")
    if config.channels not in _CHANNELS:
        raise OptionsError(f"unknown channel mode {config.channels}")
    values: dict = {"task": _TASKS[config.task], "channels": _CHANNELS[config.channels]}
    values["word_timestamps"] = config.word_timestamps
    for name in _SCALARS:
        if config.HasField(name):
            values[name] = getattr(config, name)
    if config.temperatures:
        values["temperatures"] = tuple(config.temperatures)
    for name in _THRESHOLDS:
        if config.HasField(name):
            threshold = getattr(config, name)
            reject_unknown(threshold, name)
            kind = threshold.WhichOneof("kind")
            if kind is None:
                raise OptionsError(f"{name} must carry a value or disabled=true")
            values[name] = None if kind == "disabled" else threshold.value
    if config.HasField("suppress_tokens"):
        reject_unknown(config.suppress_tokens, "suppress_tokens")
        values["suppress_tokens"] = tuple(config.suppress_tokens.ids)
    if values.get("language") == "":
        values["language"] = None
    return TranscribeOptions(**values)


def options_to_config(options: TranscribeOptions, **extra) -> pb2.TranscribeConfig:
    """TranscribeOptions -> TranscribeConfig, sending only what differs from the defaults."""
    config = pb2.TranscribeConfig(
        task=pb2.TASK_TRANSLATE if options.task == "translate" else pb2.TASK_TRANSCRIBE,
        channels=pb2.CHANNEL_MODE_SPLIT if options.channels == "split" else pb2.CHANNEL_MODE_MIX,
        word_timestamps=options.word_timestamps,
        **extra,
    )
    for name in _SCALARS:
        value = getattr(options, name)
        if value is not None and value != getattr(_DEFAULTS, name):
            setattr(config, name, value)
    if options.temperatures != _DEFAULTS.temperatures:
        config.temperatures.extend(options.temperatures)
    for name in _THRESHOLDS:
        value = getattr(options, name)
        if value != getattr(_DEFAULTS, name):
            target = getattr(config, name)
            if value is None:
                target.disabled = True
            else:
                target.value = value
    if options.suppress_tokens != _DEFAULTS.suppress_tokens:
        config.suppress_tokens.SetInParent()
        config.suppress_tokens.ids.extend(options.suppress_tokens)
    return config


def segment_to_message(segment: Segment) -> pb2.Segment:
    return pb2.Segment(
        id=segment.id,
        channel=segment.channel,
        start=segment.start,
        end=segment.end,
        text=segment.text,
        words=[
            pb2.Word(start=w.start, end=w.end, word=w.word, probability=w.probability)
            for w in segment.words or ()
        ],
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        compression_ratio=segment.compression_ratio,
        temperature=segment.temperature,
        seek=segment.seek,
        tokens=segment.tokens,
    )


def message_to_segment(message: pb2.Segment, with_words: bool) -> Segment:
    words = None
    if with_words:
        words = tuple(Word(w.start, w.end, w.word, w.probability) for w in message.words)
    return Segment(
        id=message.id,
        seek=message.seek,
        start=message.start,
        end=message.end,
        text=message.text,
        tokens=tuple(message.tokens),
        avg_logprob=message.avg_logprob,
        compression_ratio=message.compression_ratio,
        no_speech_prob=message.no_speech_prob,
        temperature=message.temperature,
        words=words,
        channel=message.channel,
    )


_FORMATS = {
    pb2.AUDIO_FORMAT_UNSPECIFIED: "encoded",
    pb2.AUDIO_FORMAT_ENCODED: "encoded",
    pb2.AUDIO_FORMAT_PCM_S16LE: "s16le",
    pb2.AUDIO_FORMAT_PCM_F32LE: "f32le",
}
_FORMAT_ENUMS = {"encoded": pb2.AUDIO_FORMAT_ENCODED, "s16le": pb2.AUDIO_FORMAT_PCM_S16LE}
_FORMAT_ENUMS["f32le"] = pb2.AUDIO_FORMAT_PCM_F32LE


def spec_to_format(spec: pb2.AudioSpec) -> AudioFormat:
    """AudioSpec -> AudioFormat; raw PCM must say its sample rate (1 kHz..384 kHz) and channels (1..32)."""
    reject_unknown(spec, "AudioSpec")
    if spec.format not in _FORMATS:
        raise OptionsError(f"unknown audio format {spec.format}")
    kind = _FORMATS[spec.format]
    if kind == "encoded":
        return AudioFormat(kind, total_bytes=spec.total_bytes)
    if not MIN_PCM_RATE <= spec.sample_rate <= MAX_PCM_RATE:
        raise OptionsError(
            f"raw PCM needs audio.sample_rate between {MIN_PCM_RATE} and {MAX_PCM_RATE},"
            f" not {spec.sample_rate}"
        )
    if not 1 <= spec.channels <= MAX_CHANNELS:
        raise OptionsError(f"raw PCM needs audio.channels between 1 and {MAX_CHANNELS}, not {spec.channels}")
    return AudioFormat(kind, spec.sample_rate, spec.channels, spec.total_bytes)


def format_to_spec(fmt: AudioFormat) -> pb2.AudioSpec:
    return pb2.AudioSpec(
        format=_FORMAT_ENUMS[fmt.kind],
        sample_rate=fmt.sample_rate,
        channels=fmt.channels,
        total_bytes=fmt.total_bytes,
    )
