"""Memory bounds of the engine for files whose size on disk says little about their decoded size:
a length the headers do not tell, and many channels transcribed one by one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import inference.transcribe as transcribe_module
from inference.audio import decode_audio, probe_media
from inference.types import AudioError, OptionsError, Stopped, TranscribeOptions
from tests.inference.reference_runs import AUDIO, engine, stream_longer_than

JFK = AUDIO / "jfk.flac"
STREAMINFO = 8  # "fLaC", then the 4-byte header of the STREAMINFO block


def without_sample_count(flac: bytes) -> bytes:
    """The same FLAC, its STREAMINFO saying "total samples unknown" (0), as streaming encoders write."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    data[STREAMINFO + 13] &= 0xF0  # the top 4 bits of the 36-bit count
    data[STREAMINFO + 14 : STREAMINFO + 18] = b"\0\0\0\0"
    return bytes(data)


def test_a_file_of_unknown_length_is_decoded_whole_while_short_then_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = tmp_path / "unknown.flac"
    unknown.write_bytes(without_sample_count(JFK.read_bytes()))
    assert probe_media(unknown).duration is None and probe_media(JFK).duration is not None
    options = TranscribeOptions(beam_size=1)
    expected = [s.tokens for s in engine("fp32").transcribe(str(JFK), options)[0]]
    # short: decoded whole, the same tokens bit for bit as the file that tells its length
    segments, info = engine("fp32").transcribe(str(unknown), options)
    assert [s.tokens for s in segments] == expected
    assert info.duration == pytest.approx(11.0, abs=0.01)
    # longer than the in-memory bound: streamed window by window, not decoded whole
    streamed_chunks = []
    real_chunks = transcribe_module.iter_audio_chunks

    def counting_chunks(*args, **kwargs):
        for chunk in real_chunks(*args, **kwargs):
            streamed_chunks.append(chunk.shape[0])
            yield chunk

    stream_longer_than(monkeypatch, 5.0, 3.0)
    monkeypatch.setattr(transcribe_module, "iter_audio_chunks", counting_chunks)
    segments, info = engine("fp32").transcribe(str(unknown), options)
    assert [s.tokens for s in segments] == expected
    assert len(streamed_chunks) >= 4 and max(streamed_chunks) <= 3 * 16000
    with pytest.raises(AudioError) as raised:  # the limit still holds on the streamed path
        engine("fp32").transcribe(str(unknown), options, max_seconds=8.0)
    assert raised.value.code == "AUDIO_TOO_LONG"


@pytest.mark.parametrize("streamed", [False, True])
def test_split_channels_count_every_channel_against_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    if streamed:  # the same limits hold when the channels are read window by window
        stream_longer_than(monkeypatch, 5.0, 3.0)
    speech = decode_audio(str(JFK))  # 11 s
    four = tmp_path / "four.wav"
    sf.write(four, np.stack([speech] * 4, axis=1), 16000)
    flac = tmp_path / "four.flac"
    sf.write(flac, np.stack([speech] * 4, axis=1), 16000)
    unknown = tmp_path / "four-unknown-length.flac"  # found over the limit while decoding
    unknown.write_bytes(without_sample_count(flac.read_bytes()))
    options = TranscribeOptions(channels="split", beam_size=1)
    for path in (four, unknown):
        with pytest.raises(AudioError) as raised:
            engine("fp32").transcribe(str(path), options, max_seconds=40)  # 4 x 11 s = 44 s
        error = raised.value
        assert error.code == "AUDIO_TOO_LONG" and "4 channels" in error.message and "40 s" in error.message
    segments, info = engine("fp32").transcribe(str(four), options, max_seconds=50)
    assert info.channels == 4 and {s.channel for s in segments} == {0, 1, 2, 3}
    mixed, _ = engine("fp32").transcribe(str(four), TranscribeOptions(beam_size=1), max_seconds=40)
    assert list(mixed)  # mixed, it is 11 s of audio


def test_sampling_at_a_fallback_temperature_is_reproducible() -> None:
    """A job run again (its worker died) must store what the first run would have: the sampler is
    seeded per transcription."""
    options = TranscribeOptions(temperatures=(1.0,), best_of=2, beam_size=1)
    audio = decode_audio(str(JFK))
    runs = [[s.tokens for s in engine("fp32").transcribe(audio, options)[0]] for _ in range(3)]
    assert runs[0] and runs[0] == runs[1] == runs[2]


def test_audio_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    """Frame durations summed as floats drifted past an exact limit (30 s of WAV was 30.00000000000002)."""
    rng = np.random.default_rng(0)
    for rate, frames in ((16000, 30 * 16000), (44100, 30 * 44100)):
        path = tmp_path / f"exact-{rate}.wav"
        sf.write(path, (0.1 * rng.standard_normal(frames)).astype(np.float32), rate)
        assert decode_audio(str(path), max_seconds=30.0).shape[0] == 30 * 16000
        with pytest.raises(AudioError) as raised:
            decode_audio(str(path), max_seconds=29.99)
        assert raised.value.code == "AUDIO_TOO_LONG"
    stereo = tmp_path / "stereo-15s.wav"
    sf.write(stereo, (0.1 * rng.standard_normal((15 * 16000, 2))).astype(np.float32), 16000)
    options = TranscribeOptions(channels="split", beam_size=1)
    _, info = engine("fp32").transcribe(str(stereo), options, max_seconds=30.0)  # 2 x 15 s: exactly 30
    assert info.channels == 2


def test_split_arrays_count_every_channel_against_the_limit() -> None:
    eight = np.zeros((8, 11 * 16000), dtype=np.float32)
    with pytest.raises(AudioError) as raised:
        engine("fp32").transcribe(eight, TranscribeOptions(channels="split"), max_seconds=30.0)
    assert raised.value.code == "AUDIO_TOO_LONG" and "8 channels" in raised.value.message
    _, info = engine("fp32").transcribe(eight, TranscribeOptions(), max_seconds=30.0)  # mixed: 11 s
    assert info.duration == pytest.approx(11.0)


def _speech_then_silence(path: Path, minutes: float) -> None:
    """jfk's two channels, then silence up to `minutes`, written block by block (small on disk)."""
    speech = decode_audio(str(JFK), channels="split").T
    block = np.zeros((16000 * 60, 2), np.float32)
    with sf.SoundFile(path, "w", 16000, 2, "PCM_16", format="FLAC") as out:
        out.write(speech)
        for _ in range(int(minutes)):
            out.write(block)


def test_long_split_audio_is_streamed_channel_by_channel(tmp_path: Path) -> None:
    """Split, a long file was decoded whole: every channel's samples, then every channel's features
    (30 min of stereo: over 300 MB). Each channel is now read window by window, as mixed audio is."""
    import tracemalloc

    long = tmp_path / "long-stereo.flac"
    _speech_then_silence(long, minutes=30)
    options = TranscribeOptions(beam_size=1, channels="split")
    expected = [s.text for s in engine("fp32").transcribe(str(JFK), options)[0] if s.channel == 0]
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        segments, info = engine("fp32").transcribe(str(long), options)
        first = next(segments)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    segments.close()
    print(f"\n30 min of stereo, split: {peak / 2**20:.1f} MiB traced up to the first segment")
    assert info.channels == 2 and info.duration == pytest.approx(30 * 60 + 11, abs=1)
    assert first.channel == 0 and first.text == expected[0]  # (its end differs: silence follows)
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB traced"  # whole, it was 458 MiB


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_split_channel_files_are_closed_with_the_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long split file is spooled to one temporary file per channel; closing the segments closes them,
    even before the first segment was asked for (the server does, when its call ends early)."""
    stream_longer_than(monkeypatch, 5.0)
    options = TranscribeOptions(channels="split", beam_size=1)
    before = _open_descriptors()
    segments, info = engine("fp32").transcribe(str(JFK), options)
    assert info.channels == 2 and _open_descriptors() == before + 2  # one file per channel
    segments.close()
    assert _open_descriptors() == before
    segments, _ = engine("fp32").transcribe(str(JFK), options)
    assert {s.channel for s in segments} == {0, 1}  # read to the end
    assert _open_descriptors() == before


@pytest.mark.parametrize("stop_at_check", [1, 6])
def test_a_stop_during_the_passes_before_any_window_ends_them(
    monkeypatch: pytest.MonkeyPatch, stop_at_check: int
) -> None:
    """Split and long: the spooling pass (4 chunks here, stopped at its first) and channel 0's first
    pass (stopped at its second chunk) run before any window; a stop there ends them, and the channel
    files close."""
    stream_longer_than(monkeypatch, 5.0, 3.0)
    checks = 0

    def stop() -> bool:
        nonlocal checks
        checks += 1
        return checks >= stop_at_check

    before = _open_descriptors()
    with pytest.raises(Stopped):
        engine("fp32").transcribe(str(JFK), TranscribeOptions(channels="split", beam_size=1), stop=stop)
    assert checks == stop_at_check and _open_descriptors() == before


@pytest.mark.parametrize("long", [False, True])
def test_split_takes_at_most_32_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, long: bool) -> None:
    """Split, each channel is a transcription (a long one a temporary file): 40 are refused before any
    is transcribed, as raw PCM refuses them; mixed, the same file is one transcription."""
    if long:
        stream_longer_than(monkeypatch, 0.5)
    many = tmp_path / "forty.wav"
    sf.write(many, np.zeros((16000, 40), np.float32), 16000, subtype="PCM_16")
    for source in (str(many), decode_audio(str(many), channels="split")):
        with pytest.raises(OptionsError) as raised:
            engine("fp32").transcribe(source, TranscribeOptions(channels="split", beam_size=1))
        assert raised.value.code == "VALIDATION_ERROR" and "at most 32 channels" in raised.value.message
    segments, info = engine("fp32").transcribe(str(many), TranscribeOptions(beam_size=1))
    assert info.channels == 1 and list(segments) == []  # silence, mixed


def test_many_short_channels_split_are_streamed_not_decoded_whole(tmp_path: Path) -> None:
    """Split, the whole-file cut-off counted each channel on its own: 32 channels of 119 s were decoded
    whole (245 MB of samples per call). It now counts them together, as the limit on audio does."""
    import tracemalloc

    path = tmp_path / "many.wav"
    channels, seconds = 32, 90  # 2,880 channel-seconds, each channel under the 120 s cut-off
    sf.write(path, np.zeros((seconds * 16000, channels), np.int16), 16000, subtype="PCM_16")
    options = TranscribeOptions(beam_size=1, channels="split")
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        segments, info = engine("fp32").transcribe(str(path), options)
        produced = list(segments)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.channels == channels and info.duration == pytest.approx(seconds)
    assert produced == []  # digital silence
    whole = channels * seconds * 16000 * 4  # 176 MiB
    # streamed: one channel's windows and features at a time (about 40 MiB, as for mono audio)
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB traced; whole samples alone: {whole / 2**20:.0f} MiB"


@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_stop_during_a_window_ends_its_decoding_within_a_few_steps(beam_size: int) -> None:
    """stop() was asked only between windows and temperatures: a window's decoding (jfk: 27 steps and
    more, up to 224 per temperature) ran to its end for a caller that had gone."""
    from inference.decoding import STOP_CHECK_STEPS

    whisper = engine("fp32")
    steps = 0
    gone_at = 10  # the caller goes during the 10th decoder step of the window

    decode = whisper.model.decode

    def counted(*args, **kwargs):
        nonlocal steps
        steps += 1
        return decode(*args, **kwargs)

    def stop() -> bool:
        return steps >= gone_at

    whisper.model.decode = counted
    try:
        segments, _ = whisper.transcribe(str(JFK), TranscribeOptions(beam_size=beam_size), stop=stop)
        produced = list(segments)
    finally:
        del whisper.model.decode  # the instance's own attribute: the class's method again
    assert produced == []  # the window was dropped
    assert steps - gone_at <= STOP_CHECK_STEPS, f"{steps - gone_at} decoder steps after the caller went"
