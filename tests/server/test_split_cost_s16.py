"""Split, each channel is decoded on its own in 30 s windows, the last one padded: 32 channels of 0.2 s
of noise counted 6.4 s against a 40 s limit but cost 32 windows (about 60 s of CPU, no progress sent).
A split call may now decode no more windows than the longest mono audio the limit allows."""

from __future__ import annotations

import io
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soundfile as sf

from inference.limits import decoding_windows, window_budget
from inference.stubs import pb2, pb2_grpc
from tests.server.conftest import ServerProcess

RATE = 16000
CHUNK = 256 * 1024


def _noise(channels: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(16)
    return (rng.standard_normal((int(seconds * RATE), channels)) * 3000).astype("<i2")


def _requests(
    data: bytes, spec: pb2.AudioSpec, split: bool = True, request_id: str = ""
) -> Iterator[pb2.TranscribeRequest]:
    mode = pb2.CHANNEL_MODE_SPLIT if split else pb2.CHANNEL_MODE_MIX
    config = pb2.TranscribeConfig(
        audio=spec, channels=mode, beam_size=1, temperatures=[0.0], request_id=request_id
    )
    yield pb2.TranscribeRequest(config=config)
    for start in range(0, len(data), CHUNK):
        yield pb2.TranscribeRequest(audio=data[start : start + CHUNK])


def _pcm_spec(channels: int, total_bytes: int = 0) -> pb2.AudioSpec:
    return pb2.AudioSpec(
        format=pb2.AUDIO_FORMAT_PCM_S16LE, sample_rate=RATE, channels=channels, total_bytes=total_bytes
    )


def _call(server: ServerProcess, requests: Iterator[pb2.TranscribeRequest]):
    """(responses received, the error or None)."""
    received: list[pb2.TranscribeResponse] = []
    with grpc.insecure_channel(server.addr) as channel:
        try:
            for response in pb2_grpc.TranscriberStub(channel).Transcribe(requests, timeout=120):
                received.append(response)
        except grpc.RpcError as error:
            return received, error
    return received, None


def _assert_window_refusal(error: grpc.RpcError | None, received: list, channels: int) -> None:
    assert error is not None, f"transcribed instead of refused: {len(received)} responses"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert dict(error.trailing_metadata() or ()).get("cliptext-error-code") == "AUDIO_TOO_LONG"
    assert f"{channels} channels" in error.details() and "over the 2 windows" in error.details()
    assert "limit of 40 s" in error.details()
    assert received == []  # refused before any window was decoded: not even the first progress


def test_each_split_channel_counts_at_least_one_window() -> None:
    assert decoding_windows(0.2) == 1 and decoding_windows(30.0) == 1 and decoding_windows(30.01) == 2
    assert decoding_windows(0.2, channels=32) == 32 and decoding_windows(45.0, channels=3) == 6
    assert window_budget(40.0) == 2 and window_budget(4 * 3600) == 480 and window_budget(10.0) == 1


def test_announced_split_pcm_of_many_short_channels_is_refused_before_decoding(
    server: ServerProcess,
) -> None:
    """The reviewer's call: 32 x 0.2 s = 6.4 s, under the shared server's 40 s, but 32 windows."""
    data = _noise(32, 0.2).tobytes()
    received, error = _call(server, _requests(data, _pcm_spec(32, len(data)), request_id="split-cost-32"))
    _assert_window_refusal(error, received, 32)
    assert "32 windows" in error.details()
    line = server.wait_for_log(r"request_id=split-cost-32 .*")
    assert "segments=0 outcome=AUDIO_TOO_LONG" in line.group(0)


@pytest.mark.parametrize("channels", [3, 32])
def test_unannounced_split_pcm_is_refused_once_its_length_is_known(
    server: ServerProcess, channels: int
) -> None:
    data = _noise(channels, 0.2).tobytes()
    received, error = _call(server, _requests(data, _pcm_spec(channels)))
    _assert_window_refusal(error, received, channels)


def test_encoded_split_file_of_many_short_channels_is_refused(server: ServerProcess) -> None:
    wav = io.BytesIO()
    sf.write(wav, _noise(8, 0.2), RATE, format="WAV", subtype="PCM_16")
    spec = pb2.AudioSpec(format=pb2.AUDIO_FORMAT_ENCODED, total_bytes=len(wav.getvalue()))
    received, error = _call(server, _requests(wav.getvalue(), spec, request_id="split-cost-wav"))
    _assert_window_refusal(error, received, 8)


def test_split_within_the_window_budget_and_mixed_are_still_transcribed(server: ServerProcess) -> None:
    """2 channels of 20 s take 2 windows, as 40 s of mono does; 32 channels mixed are one window."""
    stereo = np.zeros((20 * RATE, 2), dtype="<i2").tobytes()
    received, error = _call(server, _requests(stereo, _pcm_spec(2, len(stereo))))
    assert error is None, error.details()
    assert received[-1].summary.channels == 2
    many = _noise(32, 0.2).tobytes()
    received, error = _call(server, _requests(many, _pcm_spec(32, len(many)), split=False))
    assert error is None, error.details()
    assert received[-1].summary.channels == 1
