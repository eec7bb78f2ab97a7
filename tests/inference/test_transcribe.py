"""WhisperEngine end to end on real audio: the words said, channels, edge cases, cancellation, threads."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import inference.transcribe as transcribe_module
from inference.audio import decode_audio, iter_audio_chunks
from inference.mel_stream import open_stream
from inference.types import TranscribeOptions
from tests.inference.reference_runs import (
    AUDIO,
    ROOT,
    TRANSCRIPTS,
    engine,
    normalize,
    ours,
    reference,
    stream_longer_than,
    wer,
)


def _text(segments) -> str:
    return "".join(s.text for s in segments)


@pytest.mark.parametrize("clip", ["jfk.flac", "jfk.mp3"])
def test_jfk_text(clip: str) -> None:
    segments, info = engine("fp32").transcribe(str(AUDIO / clip))
    assert normalize(_text(segments)) == normalize(TRANSCRIPTS[clip]["text"])
    assert info.language == "en"
    assert info.duration == pytest.approx(11.0, abs=0.1)


def test_split_channels_transcribes_each_channel() -> None:
    segments, info = engine("fp32").transcribe(
        str(AUDIO / "stereo_diarization.wav"), TranscribeOptions(channels="split")
    )
    segments = list(segments)
    assert info.channels == 2
    truth = TRANSCRIPTS["stereo_diarization.wav"]
    left = _text(s for s in segments if s.channel == 0)
    right = _text(s for s in segments if s.channel == 1)
    assert wer(truth["left"], left) <= 0.2
    assert wer(truth["right"], right) <= 0.2


def test_english_half_of_multilingual_no_worse_than_faster_whisper() -> None:
    truth = TRANSCRIPTS["multilingual.mp3"]["text_en"]
    mine = ours("fp32", 5)["multilingual.mp3"]
    ref = reference("float32", 5)["multilingual.mp3"]
    mine_en = _text(s for s in mine if s.end <= 30.5)
    ref_en = "".join(s["text"] for s in ref["segments"] if s["end"] <= 30.5)
    assert wer(truth, mine_en) <= wer(truth, ref_en) + 1e-9
    assert wer(truth, mine_en) < 0.2


def test_silence_gives_an_empty_transcript() -> None:
    segments, info = engine("fp32").transcribe(np.zeros(16000 * 5, dtype=np.float32))
    assert list(segments) == []
    assert info.duration == 5.0


def test_a_tenth_of_a_second_works() -> None:
    clip = np.random.default_rng(0).normal(0, 0.01, 1600).astype(np.float32)
    segments, info = engine("fp32").transcribe(clip, TranscribeOptions(beam_size=1))
    assert isinstance(list(segments), list)
    assert info.duration == pytest.approx(0.1)


def test_closing_the_generator_stops_decoding() -> None:
    segments, _ = engine("fp32").transcribe(
        str(AUDIO / "multilingual.mp3"), TranscribeOptions(beam_size=1, temperatures=(0.0,))
    )
    first = next(segments)
    assert first.start == 0.0
    segments.close()
    with pytest.raises(StopIteration):
        next(segments)


def test_threads_share_one_engine() -> None:
    options = TranscribeOptions(beam_size=2)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        segments, _ = engine("fp32").transcribe(str(AUDIO / "jfk.flac"), options)
        results[i] = _text(segments)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results.values())) == 1
    assert normalize(results[0]) == normalize(TRANSCRIPTS["jfk.flac"]["text"])


def test_cli_prints_plain_text() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "inference", "transcribe", str(AUDIO / "jfk.mp3"), "--threads", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert normalize(proc.stdout) == normalize(TRANSCRIPTS["jfk.mp3"]["text"])


def test_streamed_windows_equal_whole_file_features() -> None:
    extractor = engine("fp32").feature_extractor
    path = AUDIO / "multilingual.mp3"
    full = extractor(decode_audio(path))
    stream, content_frames, n_samples = open_stream(extractor, lambda: iter_audio_chunks(path, 16000, 7.0))
    assert content_frames == full.shape[-1] - 1
    assert n_samples == decode_audio(path).shape[0]
    for seek, size in [(0, 3000), (2994, 3000), (5000, content_frames - 5000)]:
        np.testing.assert_allclose(stream.window(seek, size), full[:, seek : seek + size], atol=1e-6)


def test_long_split_files_are_streamed_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    path = AUDIO / "jfk.flac"  # two channels
    options = TranscribeOptions(beam_size=1, channels="split")
    in_memory, _ = engine("fp32").transcribe(decode_audio(path, channels="split"), options)
    expected = [(s.channel, s.tokens) for s in in_memory]
    stream_longer_than(monkeypatch, 5.0, 3.0)

    def decoded_whole(*args, **kwargs):
        raise AssertionError("a long file was decoded whole")

    monkeypatch.setattr(transcribe_module, "decode_audio", decoded_whole)
    streamed, info = engine("fp32").transcribe(str(path), options)
    assert [(s.channel, s.tokens) for s in streamed] == expected
    assert info.channels == 2 and {channel for channel, _ in expected} == {0, 1}


def test_long_files_are_streamed_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    path = AUDIO / "multilingual.mp3"
    options = TranscribeOptions(beam_size=1)
    in_memory, _ = engine("fp32").transcribe(decode_audio(path), options)
    stream_longer_than(monkeypatch, 10.0, 7.0)
    streamed, info = engine("fp32").transcribe(str(path), options)
    assert [s.tokens for s in streamed] == [s.tokens for s in in_memory]
    assert info.duration == pytest.approx(60.0, abs=0.5)


@pytest.mark.parametrize("language", ["en", None])
def test_english_or_no_language_is_what_an_english_only_model_takes(language: str | None) -> None:
    segments, info = engine("fp32").transcribe(str(AUDIO / "jfk.flac"), TranscribeOptions(language=language))
    assert normalize(_text(segments)) == normalize(TRANSCRIPTS["jfk.flac"]["text"])
    assert info.language == "en"


def test_another_language_is_refused_by_an_english_only_model() -> None:
    """faster-whisper would transcribe German speech as English words; the caller is told instead."""
    from inference.types import OptionsError

    with pytest.raises(OptionsError, match="English-only"):
        engine("fp32").transcribe(str(AUDIO / "multilingual.mp3"), TranscribeOptions(language="de"))


@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_long_prompt_and_a_long_prefix_fit_the_decoder_together(beam_size: int) -> None:
    """Each alone is cut to faster-whisper's 223 tokens; together they made a 449-token prompt, one past
    the decoder's last position, and ONNX Runtime failed the call. The context now gives way."""
    words = " ".join(f"word{i}" for i in range(400))
    options = TranscribeOptions(beam_size=beam_size, initial_prompt=words, prefix=words)
    segments = list(engine("fp32").transcribe(str(AUDIO / "jfk.flac"), options)[0])
    assert segments and segments[0].text.startswith(" word0 word1 word2")
