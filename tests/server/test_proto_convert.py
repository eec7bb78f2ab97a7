"""Options and audio specs survive the trip through the messages; bad ones are refused."""

from __future__ import annotations

import pytest

from inference.audio_upload import AudioFormat
from inference.proto_convert import config_to_options, format_to_spec, options_to_config, spec_to_format
from inference.stubs import pb2
from inference.types import OptionsError, TranscribeOptions


@pytest.mark.parametrize(
    "options",
    [
        TranscribeOptions(),
        TranscribeOptions(language="en", beam_size=1, best_of=2, patience=2.0, word_timestamps=True),
        TranscribeOptions(
            temperatures=(0.0, 0.5),
            compression_ratio_threshold=None,
            log_prob_threshold=-2.0,
            no_speech_threshold=None,
            condition_on_previous_text=False,
            initial_prompt="ComfyUI",
            prefix="Then",
            suppress_tokens=(),
            without_timestamps=True,
            channels="split",
            task="translate",
            length_penalty=0.5,
            max_new_tokens=20,
            repetition_penalty=1.1,
            no_repeat_ngram_size=3,
            suppress_blank=False,
            max_initial_timestamp=0.5,
            prompt_reset_on_temperature=0.2,
            prepend_punctuations="",
            append_punctuations=".",
        ),
    ],
)
def test_options_round_trip(options: TranscribeOptions) -> None:
    wire = pb2.TranscribeConfig.FromString(options_to_config(options).SerializeToString())
    assert config_to_options(wire) == options


def test_invalid_option_values_are_refused() -> None:
    with pytest.raises(OptionsError, match="beam_size"):
        config_to_options(pb2.TranscribeConfig(beam_size=0))
    with pytest.raises(OptionsError, match="temperatures"):
        config_to_options(pb2.TranscribeConfig(temperatures=[2.0]))


def test_unknown_fields_and_enum_values_are_refused() -> None:
    config = pb2.TranscribeConfig(request_id="r")
    # field 999, varint 1: what a newer client would send for an option this server does not know
    wire = config.SerializeToString() + b"\xb8\x3e\x01"
    with pytest.raises(OptionsError, match="999"):
        config_to_options(pb2.TranscribeConfig.FromString(wire))
    with pytest.raises(OptionsError, match="task"):
        config_to_options(pb2.TranscribeConfig.FromString(b"\x20\x07"))  # task = 7


def test_pcm_spec_needs_rate_and_channels() -> None:
    spec = format_to_spec(AudioFormat("s16le", 44100, 2, 1000))
    assert spec_to_format(spec) == AudioFormat("s16le", 44100, 2, 1000)
    assert spec_to_format(pb2.AudioSpec()) == AudioFormat("encoded")
    with pytest.raises(OptionsError, match="sample_rate"):
        spec_to_format(pb2.AudioSpec(format=pb2.AUDIO_FORMAT_PCM_S16LE, channels=1))
    with pytest.raises(OptionsError, match="channels"):
        spec_to_format(pb2.AudioSpec(format=pb2.AUDIO_FORMAT_PCM_F32LE, sample_rate=16000))
