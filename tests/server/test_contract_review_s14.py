"""Where the server's answers did not say what was true (review S14, a client built from the proto and
docs only): an over-limit PCM upload was "audio is 32.8 s" when only that much had come of 40 s, an
empty message after the config was "only the first message may carry a config", "server busy" gave
counts that took in calls already gone ("0 running and 1 waiting" with no waiting place), calls still
running after the grace period ended with grpc's own "Cancelling all calls" and no trailer, and
reflection v1 was UNIMPLEMENTED.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from grpc_reflection.v1alpha import reflection_pb2

from inference.stubs import SERVICE_NAME, pb2, pb2_grpc
from tests.media import clip_path
from tests.server.conftest import ServerProcess

CHUNK = 256 * 1024  # what our client sends
RATE = 16000
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def _speech_pcm(seconds: float, channels: int = 1) -> bytes:
    """jfk repeated to `seconds`, s16le 16 kHz, the same speech on every channel."""
    samples, rate = sf.read(clip_path("jfk.flac"), dtype="float32", always_2d=True)
    mono = soxr.resample(samples.mean(axis=1), rate, RATE)
    audio = np.tile(mono, int(np.ceil(seconds * RATE / len(mono))))[: int(seconds * RATE)]
    return np.repeat((audio * 32767).astype("<i2")[:, None], channels, axis=1).tobytes()


def _pcm_requests(
    data: bytes, channels: int = 1, split: bool = False, request_id: str = ""
) -> Iterator[pb2.TranscribeRequest]:
    """A config for s16le 16 kHz PCM of unknown size (total_bytes 0), then the bytes in 256 KiB chunks."""
    spec = pb2.AudioSpec(format=pb2.AUDIO_FORMAT_PCM_S16LE, sample_rate=RATE, channels=channels)
    mode = pb2.CHANNEL_MODE_SPLIT if split else pb2.CHANNEL_MODE_MIX
    config = pb2.TranscribeConfig(
        audio=spec, channels=mode, beam_size=1, temperatures=[0.0], request_id=request_id
    )
    yield pb2.TranscribeRequest(config=config)
    for start in range(0, len(data), CHUNK):
        yield pb2.TranscribeRequest(audio=data[start : start + CHUNK])


def _refused(server: ServerProcess, requests: Iterator[pb2.TranscribeRequest]) -> grpc.RpcError:
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(pb2_grpc.TranscriberStub(channel).Transcribe(requests, timeout=60))
    return raised.value


def _trailer(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("cliptext-error-code")


def test_unannounced_pcm_over_the_limit_says_more_than_the_limit(server: ServerProcess) -> None:
    """The shared server's limit is 40 s: 60 s of PCM of unknown size is refused after 41 s of it."""
    error = _refused(server, _pcm_requests(_speech_pcm(60.0)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _trailer(error) == "AUDIO_TOO_LONG"
    assert error.details().startswith("more than the limit of 40 s of audio (refused after receiving 4")
    assert "audio is" not in error.details()
    # split, every channel counts: 2 x 25 s is over the limit, though each channel is under it
    error = _refused(server, _pcm_requests(_speech_pcm(25.0, channels=2), channels=2, split=True))
    assert _trailer(error) == "AUDIO_TOO_LONG", error.details()
    assert "more than the limit of 40 s of audio (split: every channel counts" in error.details()
    assert "x 2 channels = 4" in error.details()


def test_an_empty_message_after_the_config_is_refused_for_what_it_is(server: ServerProcess) -> None:
    config = pb2.TranscribeRequest(config=pb2.TranscribeConfig(beam_size=1))
    error = _refused(server, iter([config, pb2.TranscribeRequest()]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and _trailer(error) == "VALIDATION_ERROR"
    assert error.details() == "every message after the first must carry audio"
    error = _refused(server, iter([config, config]))  # a second config keeps its own message
    assert error.details() == "only the first message may carry a config"


@pytest.fixture(scope="module")
def no_queue_server(launch) -> ServerProcess:
    return launch("--max-concurrent", "1", "--max-queue", "0")


def test_busy_says_the_places_are_taken_not_a_stale_count(no_queue_server: ServerProcess) -> None:
    """No waiting place, one call holding the one slot's place: the refusal read "0 transcriptions
    running and 1 waiting", counts that also take in a call whose client has already gone."""
    release = threading.Event()

    def held() -> Iterator[pb2.TranscribeRequest]:
        yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(beam_size=1))
        release.wait(30)

    with grpc.insecure_channel(no_queue_server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        holding = stub.Transcribe(held(), timeout=60)
        time.sleep(0.5)  # admitted
        try:
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.Transcribe(_pcm_requests(_speech_pcm(1.0)), timeout=30))
        finally:
            holding.cancel()
            release.set()
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _trailer(error) == "SERVICE_UNAVAILABLE"
    assert error.details() == (
        "server busy: all places are taken (1 transcribing at once, 0 waiting);"
        " retry later or on another server"
    )


def test_a_call_still_running_when_the_grace_ends_is_unavailable_with_its_trailer(launch) -> None:
    server = launch("--max-concurrent", "1", "--grace", "1")
    requests = _pcm_requests(_speech_pcm(300.0), request_id="outlives-the-grace")  # ten windows
    with grpc.insecure_channel(server.addr) as channel:
        call = pb2_grpc.TranscriberStub(channel).Transcribe(requests, timeout=300)
        received = []
        with pytest.raises(grpc.RpcError) as raised:
            for response in call:
                received.append(response.WhichOneof("event"))
                if received.count("segment") == 1:
                    server.process.send_signal(signal.SIGTERM)
    error = raised.value
    assert "summary" not in received and "segment" in received
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert error.details() == "the server is shutting down"
    assert _trailer(error) == "INFERENCE_UNAVAILABLE"
    assert server.process.wait(90) == 0
    line = server.wait_for_log(r".*request_id=outlives-the-grace .*").group(0)
    assert "outcome=INFERENCE_UNAVAILABLE" in line


def test_reflection_answers_v1_as_well_as_v1alpha(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.addr) as channel:
        info = channel.stream_stream(
            REFLECTION_V1,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = list(info(iter([request]), timeout=10))
        names = {service.name for service in answer.list_services_response.service}
        assert SERVICE_NAME in names and "grpc.health.v1.Health" in names
        by_symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
        [described] = list(info(iter([by_symbol]), timeout=10))
        assert described.file_descriptor_response.file_descriptor_proto


def test_a_call_stalled_in_its_upload_does_not_hold_the_shutdown(launch) -> None:
    """A call waiting for its client's next message sees the cut-off only when one comes: grpc's cancel
    ends it CUT_OFF_SECONDS + STATUS_FLUSH_SECONDS after the grace (20 s), within compose's
    stop_grace_period of 60 s. It waited for the upload-idle watchdog, 60 s past the grace."""
    server = launch("--max-concurrent", "1", "--grace", "1")
    release = threading.Event()

    def stalled() -> Iterator[pb2.TranscribeRequest]:
        requests = _pcm_requests(_speech_pcm(5.0))
        yield next(requests)
        yield next(requests)
        release.wait(120)  # the client goes quiet mid-upload

    with grpc.insecure_channel(server.addr) as channel:
        call = pb2_grpc.TranscriberStub(channel).Transcribe(stalled(), timeout=120)
        time.sleep(1.0)  # the server has the config and a first chunk
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            assert server.process.wait(45) == 0
            stopped_after = time.monotonic() - started
        finally:
            release.set()
            call.cancel()
    assert stopped_after < 45, stopped_after
