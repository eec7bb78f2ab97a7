"""The inference server under abuse by other services: what a call holds while it waits for its turn, and
a shutdown that cuts calls off mid-upload.

Found with scripts against a real server: four split calls of 32-channel 1 kHz PCM (7.6 MB each) on a
server with 2 slots and 2 queue places raised its RSS from 0.5 to 2.5 GB, since every admitted call
converted its samples to float32 16 kHz as it arrived and held them while it waited; and a call still
uploading when the grace period ended was logged INTERNAL with a traceback after the server said
"stopped" (the handler went on with the audio it had, on engine threads the exiting process had shut).
"""

from __future__ import annotations

import signal
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inference.audio import decode_audio
from inference.audio_upload import AudioFormat, AudioLimits, received_audio
from inference.pcm import pcm_to_float32
from inference.stubs import pb2, pb2_grpc
from tests.reliability.long_media import repeated_speech
from tests.server.conftest import ServerProcess

LIMITS = AudioLimits(max_bytes=1 << 31, max_seconds=4 * 3600)
MIB = 1024 * 1024


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_split_pcm_many_channels_wait_in_a_file_not_as_float32_in_memory() -> None:
    """20 s of 32 channels at 1 kHz: a 1.3 MB upload whose float32 16 kHz samples are 41 MB."""
    rate, channels, seconds = 1000, 32, 20
    rng = np.random.default_rng(0)
    data = rng.integers(-3000, 3000, (rate * seconds, channels), dtype=np.int16).astype("<i2").tobytes()
    fmt = AudioFormat("s16le", rate, channels, len(data))
    tracemalloc.start()
    try:
        with received_audio(_chunks(data, 4 * MIB - 64), fmt, LIMITS, mix=False) as source:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert isinstance(source, str), "held in memory while the call waits for its turn"
            spooled = decode_audio(source, channels="split")
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"receiving took {peak / MIB:.0f} MiB"
    np.testing.assert_array_equal(spooled, pcm_to_float32(data, "s16le", rate, channels, mix=False))


def test_short_pcm_holds_its_samples_not_its_bytes_too() -> None:
    """100 s of 16 kHz s16le is converted whole; the 3.2 MB of bytes need not wait with the call."""
    data = np.random.default_rng(1).integers(-3000, 3000, 16000 * 100, dtype=np.int16).tobytes()
    fmt = AudioFormat("s16le", 16000, 1, len(data))
    tracemalloc.start()
    try:
        with received_audio(_chunks(data, 256 * 1024), fmt, LIMITS, mix=True) as source:
            held = tracemalloc.get_traced_memory()[0]
            assert isinstance(source, np.ndarray)
            beside = (held - source.nbytes) / MIB
            assert beside < 1, f"{beside:.1f} MiB held beside the samples"
    finally:
        tracemalloc.stop()


def _pcm_then_a_trickle(sent: threading.Event) -> Iterator[pb2.TranscribeRequest]:
    """70 s of 48 kHz stereo s16le (no size announced) at once, then 4 KiB every 0.2 s for a minute: cut
    off, the call has 13 MB of PCM to convert before it asks the engine for anything."""
    config = pb2.TranscribeConfig(request_id="uploading")
    config.audio.format = pb2.AUDIO_FORMAT_PCM_S16LE
    config.audio.sample_rate, config.audio.channels = 48000, 2
    yield pb2.TranscribeRequest(config=config)
    rng = np.random.default_rng(2)
    for _ in range(13):
        yield pb2.TranscribeRequest(audio=rng.integers(-3000, 3000, 2 * 262144, dtype=np.int16).tobytes())
    sent.set()
    for _ in range(300):
        yield pb2.TranscribeRequest(audio=bytes(4096))
        time.sleep(0.2)


def _whole_file(path: Path) -> Iterator[pb2.TranscribeRequest]:
    yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(request_id="decoding"))
    data = path.read_bytes()
    yield from (pb2.TranscribeRequest(audio=chunk) for chunk in _chunks(data, 256 * 1024))


def test_the_server_stops_once_the_calls_cut_off_by_the_grace_period_have_ended(
    launch: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """One call decoding 5 min of speech and one still uploading when the 1 s grace ends: both end
    (UNAVAILABLE for their clients, no INTERNAL in the log) before the server says it stopped."""
    speech = repeated_speech(tmp_path / "speech.ogg", 300)
    server = launch("--grace", "1", "--max-concurrent", "2")
    started = {"decoding": threading.Event(), "uploading": threading.Event()}
    outcomes: dict[str, grpc.StatusCode] = {}

    def call(name: str, requests: Iterator[pb2.TranscribeRequest]) -> None:
        with grpc.insecure_channel(server.addr) as channel:
            try:
                for _ in pb2_grpc.TranscriberStub(channel).Transcribe(requests, timeout=60):
                    started[name].set()
                outcomes[name] = grpc.StatusCode.OK
            except grpc.RpcError as error:
                outcomes[name] = error.code()

    callers = [
        threading.Thread(target=call, args=("decoding", _whole_file(speech))),
        threading.Thread(target=call, args=("uploading", _pcm_then_a_trickle(started["uploading"]))),
    ]
    for caller in callers:
        caller.start()
    assert all(event.wait(60) for event in started.values())
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    for caller in callers:
        caller.join(30)
    assert outcomes == {"decoding": grpc.StatusCode.UNAVAILABLE, "uploading": grpc.StatusCode.UNAVAILABLE}
    lines = server.log().splitlines()
    assert not [line for line in lines if "INTERNAL" in line or "Traceback" in line]
    [stopped] = [n for n, line in enumerate(lines) if '"msg": "stopped"' in line]
    for name in started:
        [ended] = [n for n, line in enumerate(lines) if f"request_id={name} " in line]
        assert ended < stopped, f"the server said stopped while the {name} call was still running"


@pytest.fixture(autouse=True)
def _no_leftover_tracing() -> Iterator[None]:
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
