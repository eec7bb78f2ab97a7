"""Hostile gRPC calls found by fuzzing the server: options the decoder cannot use, calls that go away
while no segment comes out, and streams that never send their audio."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from inference.stubs import SERVICE_NAME, pb2, pb2_grpc
from tests.media import clip_path
from tests.reliability.long_media import repeated_speech
from tests.server.conftest import ServerProcess, health_status

JFK = clip_path("jfk.flac").read_bytes()


@pytest.fixture(scope="module")
def single_slot_server(launch) -> ServerProcess:
    limits = ("--max-concurrent", "1", "--max-queue", "1", "--max-audio-seconds", "600")
    return launch(*limits, "--upload-idle-seconds", "5")


def config_then_wait(
    config: pb2.TranscribeConfig, release: threading.Event
) -> Iterator[pb2.TranscribeRequest]:
    """The config, then nothing until `release`: an answer before it came without any audio."""
    yield pb2.TranscribeRequest(config=config)
    release.wait(20)


BAD_OPTIONS = [
    (pb2.TranscribeConfig(patience=math.nan), "patience"),
    (pb2.TranscribeConfig(patience=math.inf), "patience"),
    (pb2.TranscribeConfig(max_initial_timestamp=math.nan), "max_initial_timestamp"),
    (pb2.TranscribeConfig(max_initial_timestamp=-100.0), "max_initial_timestamp"),
    (pb2.TranscribeConfig(repetition_penalty=0.0), "repetition_penalty"),
    (pb2.TranscribeConfig(repetition_penalty=math.nan), "repetition_penalty"),
    (pb2.TranscribeConfig(length_penalty=math.nan), "length_penalty"),
    (pb2.TranscribeConfig(length_penalty=-1.0), "length_penalty"),
    (pb2.TranscribeConfig(prompt_reset_on_temperature=math.inf), "prompt_reset_on_temperature"),
    (pb2.TranscribeConfig(temperatures=[0.0] * 17), "temperatures"),
    (pb2.TranscribeConfig(max_new_tokens=0), "max_new_tokens"),
    (pb2.TranscribeConfig(no_speech_threshold=pb2.Threshold(value=math.nan)), "no_speech_threshold"),
    (pb2.TranscribeConfig(suppress_tokens=pb2.TokenIds(ids=[10**9])), "suppress_tokens"),
    (pb2.TranscribeConfig(suppress_tokens=pb2.TokenIds(ids=list(range(51864)))), "suppress_tokens"),
    (pb2.TranscribeConfig(language="xx"), "language"),
    (pb2.TranscribeConfig(language="en\n"), "language"),
    (pb2.TranscribeConfig(language="de"), "English-only"),  # the shipped model is tiny.en
]


@pytest.mark.parametrize(
    ("config", "field"), BAD_OPTIONS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_OPTIONS)]
)
def test_options_the_decoder_cannot_use_are_refused_before_the_audio(
    server: ServerProcess, config: pb2.TranscribeConfig, field: str
) -> None:
    release = threading.Event()
    with grpc.insecure_channel(server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(config_then_wait(config, release), timeout=30))
        release.set()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert field in raised.value.details()
    assert dict(raised.value.trailing_metadata())["cliptext-error-code"] == "VALIDATION_ERROR"
    assert time.monotonic() - started < 10  # answered without waiting for audio that never came


def test_suppressing_every_timestamp_is_invalid_argument_not_unknown(server: ServerProcess) -> None:
    """The first token of a window must be a timestamp: with all of them suppressed nothing is left."""
    config = pb2.TranscribeConfig(suppress_tokens=pb2.TokenIds(ids=list(range(50363, 50363 + 1501))))
    requests = [pb2.TranscribeRequest(config=config), pb2.TranscribeRequest(audio=JFK)]
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(pb2_grpc.TranscriberStub(channel).Transcribe(iter(requests), timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "suppress_tokens leaves no token" in raised.value.details()


def test_unknown_fields_in_nested_messages_are_refused(server: ServerProcess) -> None:
    threshold = pb2.Threshold(value=0.5)
    threshold.MergeFromString(b"\x98\x06\x01")  # field 99, varint 1: a field this server does not know
    config = pb2.TranscribeConfig(no_speech_threshold=threshold)
    requests = [pb2.TranscribeRequest(config=config), pb2.TranscribeRequest(audio=JFK)]
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(pb2_grpc.TranscriberStub(channel).Transcribe(iter(requests), timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not know" in raised.value.details() and "no_speech_threshold" in raised.value.details()


def test_a_call_gone_while_no_segment_comes_out_frees_its_slot(single_slot_server: ServerProcess) -> None:
    """Every window fails the thresholds and falls back through 16 temperatures: minutes of decoding
    without a segment. Its deadline must stop it within a window, not after the whole file."""
    endless = pb2.TranscribeConfig(
        request_id="endless",
        beam_size=1,
        temperatures=[0.0] * 16,
        compression_ratio_threshold=pb2.Threshold(value=-1.0),  # every decoding "fails"
        no_speech_threshold=pb2.Threshold(disabled=True),
    )
    audio = clip_path("multilingual.mp3").read_bytes()  # 60 s: two windows, 32 decodings
    with grpc.insecure_channel(single_slot_server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        requests = [pb2.TranscribeRequest(config=endless), pb2.TranscribeRequest(audio=audio)]
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(iter(requests), timeout=3))
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        started = time.monotonic()
        quick = pb2.TranscribeConfig(request_id="after", beam_size=1)
        requests = [pb2.TranscribeRequest(config=quick), pb2.TranscribeRequest(audio=JFK)]
        answers = list(stub.Transcribe(iter(requests), timeout=120))
        waited = time.monotonic() - started
    assert answers[-1].WhichOneof("event") == "summary"
    line = single_slot_server.wait_for_log(r".*request_id=endless .*").group(0)
    assert "outcome=DEADLINE_EXCEEDED" in line
    stopped_after = float(line.split("processing_seconds=")[1].split()[0])
    # one temperature of one window runs on after the deadline at most; all 32 took ~15 s here
    assert stopped_after < 8, line
    assert waited < 10, waited


def test_health_answers_while_streams_hold_every_place(single_slot_server: ServerProcess) -> None:
    """Streams that never send a message take the running slot and the waiting place; more are refused
    at once, so the threads kept for health and reflection stay free."""
    release = threading.Event()

    def silent() -> Iterator[pb2.TranscribeRequest]:
        release.wait(30)
        return
        yield

    with grpc.insecure_channel(single_slot_server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        calls = [stub.Transcribe(silent(), timeout=40) for _ in range(8)]
        time.sleep(1.0)
        try:
            for _ in range(5):
                assert (
                    health_status(single_slot_server.addr, SERVICE_NAME)
                    == health_pb2.HealthCheckResponse.SERVING
                )
                described = stub.DescribeModel(pb2.DescribeModelRequest(), timeout=5)
                assert described.name
            refused = [call for call in calls if call.done()]  # the two admitted ones are still open
            assert len(refused) == 6, [call.code() for call in calls]
            # "server busy" from admission: no overall RPC cap (it counted idle streams), each its own
            answers = [(call.code(), call.details()) for call in refused]
            assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in answers), answers
        finally:
            for call in calls:
                call.cancel()
            release.set()


def ended_by_the_watchdog(stub, requests: Iterator[pb2.TranscribeRequest], release: threading.Event) -> None:
    """The call is cancelled by the server within a few seconds of --upload-idle-seconds (5)."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(requests, timeout=60))
    ended_after = time.monotonic() - started
    release.set()
    assert raised.value.code() == grpc.StatusCode.CANCELLED
    assert 4 < ended_after < 15, ended_after  # checked every second


@pytest.mark.parametrize("sends_config", [False, True])
def test_a_stream_that_stops_sending_is_ended_and_frees_its_place(
    single_slot_server: ServerProcess, sends_config: bool
) -> None:
    release = threading.Event()
    request_id = f"idle-{sends_config}"

    def stalls() -> Iterator[pb2.TranscribeRequest]:
        if sends_config:
            yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(request_id=request_id))
            yield pb2.TranscribeRequest(audio=JFK[:1000])
        release.wait(60)

    with grpc.insecure_channel(single_slot_server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        ended_by_the_watchdog(stub, stalls(), release)
        requests = [
            pb2.TranscribeRequest(config=pb2.TranscribeConfig(beam_size=1)),
            pb2.TranscribeRequest(audio=JFK),
        ]
        assert list(stub.Transcribe(iter(requests), timeout=60))[-1].WhichOneof("event") == "summary"
    if sends_config:
        line = single_slot_server.wait_for_log(rf".*request_id={request_id} .*").group(0)
        assert "outcome=UPLOAD_IDLE" in line


def as_is(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize(
    "first",
    [
        b"\x0a\x08\x8a\x01\x05ab\xffcd",  # config.initial_prompt "ab\xffcd": a string that is not UTF-8
        b"\x0a\x05\x8a\x01\x03\xed\xa0\x80",  # a UTF-16 surrogate in CESU-8
        b"\xff\xff\xff\xff",  # not protobuf at all
    ],
)
def test_a_message_that_does_not_parse_is_invalid_argument(server: ServerProcess, first: bytes) -> None:
    with grpc.insecure_channel(server.addr) as channel:
        raw = channel.stream_stream(
            f"/{SERVICE_NAME}/Transcribe", request_serializer=as_is, response_deserializer=as_is
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(raw(iter([first]), timeout=30))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        assert "malformed message" in raised.value.details()
        describe = channel.unary_unary(
            f"/{SERVICE_NAME}/DescribeModel",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as raised:
            describe(b"\xff\xff\xff\xff", timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_trickling_upload_is_ended_and_frees_its_place(single_slot_server: ServerProcess) -> None:
    """A message every half second keeps the idle timer happy; 200 bytes a second is under the minimum
    rate, so after --upload-idle-seconds (5) the call is ended all the same."""
    stop = threading.Event()

    def trickles() -> Iterator[pb2.TranscribeRequest]:
        yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(request_id="trickle"))
        for offset in range(0, len(JFK), 100):
            if stop.wait(0.5):
                return
            yield pb2.TranscribeRequest(audio=JFK[offset : offset + 100])

    with grpc.insecure_channel(single_slot_server.addr) as channel:
        ended_by_the_watchdog(pb2_grpc.TranscriberStub(channel), trickles(), stop)
    line = single_slot_server.wait_for_log(r".*request_id=trickle .*").group(0)
    assert "outcome=UPLOAD_IDLE" in line


def test_a_call_gone_during_the_first_pass_over_a_long_file_stops_it(launch, tmp_path: Path) -> None:
    """A long file is read once whole (its features' clamp) before its first window, where the decoding
    loop checks for a caller gone: 2 h took about 12 s here. A deadline there must stop that pass."""
    server = launch("--max-concurrent", "1", "--max-audio-seconds", str(3 * 3600))
    long = repeated_speech(tmp_path / "two-hours.opus", 2 * 3600)
    config = pb2.TranscribeConfig(request_id="first-pass", beam_size=1)
    with grpc.insecure_channel(server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        data = long.read_bytes()
        chunks = (pb2.TranscribeRequest(audio=data[i : i + 2**20]) for i in range(0, len(data), 2**20))
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(iter([pb2.TranscribeRequest(config=config), *chunks]), timeout=3))
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    line = server.wait_for_log(r".*request_id=first-pass .*", timeout=60).group(0)
    assert "outcome=DEADLINE_EXCEEDED" in line
    stopped_after = float(line.split("processing_seconds=")[1].split()[0])
    assert stopped_after < 6, line  # the deadline, plus one chunk of the pass
