"""Where the server broke its own contract (review A): a failure of the server reached the client as
UNKNOWN with our exception's text, idle reflection streams used up grpc's RPC cap, a client that stopped
reading held its slot for good, an oversize message read as a busy server, processing_seconds counted the
wait for the config, unknown fields passed in audio messages, and IPv6 servers were dropped from a list.
"""

from __future__ import annotations

import os
import queue
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inference.client import InferenceError, LimitExceeded, TranscriberClient, channel_target
from inference.stubs import SERVICE_NAME, pb2, pb2_grpc
from jobs.errors import classify
from tests.media import clip_path
from tests.processes import stop
from tests.server.conftest import ROOT, START_TIMEOUT, ServerProcess, health_status, wait_serving

JFK_MP3 = clip_path("jfk.mp3").read_bytes()
FAST = pb2.TranscribeConfig(beam_size=1)
# a file-size limit for the server process below the size of jfk.flac (1.1 MB): spooling that upload
# fails with EFBIG (Python ignores SIGXFSZ), as it would on a full temporary disk
FILE_SIZE_LIMIT = 512 * 1024


class V6Server(ServerProcess):
    @property
    def addr(self) -> str:
        return f"[::1]:{self.port}"


@pytest.fixture(scope="module")
def start(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server as conftest's `launch` does, but on any address and with a preexec_fn."""
    started: list[ServerProcess] = []

    def start_server(
        *flags: str, addr: str = "127.0.0.1:0", kind: type[ServerProcess] = ServerProcess, preexec_fn=None
    ) -> ServerProcess:
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CLIPTEXT_DATA_DIR": str(log_path.parent)}
        command = [sys.executable, "-m", "inference.server", "--addr", addr, "--model-dir", str(model_dir),
                   "--precision", "fp32", "--threads", "1", *flags]  # fmt: skip
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=preexec_fn
            )
        server = kind(process, 0, log_path)
        started.append(server)
        server.port = int(server.wait_for_log(r"listening on \S+:(\d+)", START_TIMEOUT).group(1))
        wait_serving(server)
        return server

    yield start_server
    stop(*(server.process for server in started))


@pytest.fixture(scope="module")
def small_server(launch) -> ServerProcess:
    """One slot, one waiting place: grpc's old cap was 1 + 1 + 4 = 6 calls of any kind."""
    return launch("--max-concurrent", "1", "--max-queue", "1", "--upload-idle-seconds", "5")


def _raw_transcribe(channel: grpc.Channel):
    """Transcribe with messages sent as bytes, to carry fields the stubs cannot write."""
    return channel.stream_stream(
        f"/{SERVICE_NAME}/Transcribe",
        request_serializer=lambda data: data,
        response_deserializer=pb2.TranscribeResponse.FromString,
    )


def test_a_failure_of_the_server_is_internal_with_its_trailer_and_no_internals(start) -> None:
    """A real failure no check foresees: the server's file-size limit hit while spooling an upload."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    server = start(preexec_fn=limit_file_size)
    big = clip_path("jfk.flac").read_bytes()
    assert len(big) > FILE_SIZE_LIMIT
    config = pb2.TranscribeConfig(beam_size=1, request_id="too-big-to-spool")
    spooled = [pb2.TranscribeRequest(config=config), pb2.TranscribeRequest(audio=big)]
    with grpc.insecure_channel(server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(iter(spooled), timeout=60))
        # the server goes on serving what fits
        requests = [pb2.TranscribeRequest(config=FAST), pb2.TranscribeRequest(audio=JFK_MP3)]
        assert list(stub.Transcribe(iter(requests), timeout=60))[-1].WhichOneof("event") == "summary"
    error = raised.value
    assert error.code() == grpc.StatusCode.INTERNAL, error.details()
    assert dict(error.trailing_metadata())["cliptext-error-code"] == "INTERNAL"
    assert error.details() == "internal error in the inference server"
    line = server.wait_for_log(r".*request_id=too-big-to-spool .*").group(0)
    assert "outcome=INTERNAL" in line
    assert "File too large" in server.log()  # the traceback stays on the server
    assert InferenceError.from_rpc(error).code == "INTERNAL"


def _open_reflection_stream(addr: str, channels: list[grpc.Channel]) -> tuple[object, queue.Queue]:
    """A reflection stream that asks one thing, then stays open and idle, as grpcui and Postman leave it."""
    more: queue.Queue = queue.Queue()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        while (request := more.get()) is not None:
            yield request

    channel = grpc.insecure_channel(addr)  # one connection each, as separate tools would open
    channels.append(channel)
    return reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests()), more


def test_idle_reflection_streams_leave_room_for_health_describe_and_transcribe(
    small_server: ServerProcess,
) -> None:
    channels: list[grpc.Channel] = []
    streams = [_open_reflection_stream(small_server.addr, channels) for _ in range(12)]
    try:
        answered, refused = [], []
        for stream, _ in streams:
            try:
                answered.append(next(stream).list_services_response)
            except grpc.RpcError as error:
                refused.append(error.code())
        with grpc.insecure_channel(small_server.addr) as channel:
            stub = pb2_grpc.TranscriberStub(channel)
            for _ in range(10):
                started = time.monotonic()
                assert (
                    health_status(small_server.addr, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
                )
                assert stub.DescribeModel(pb2.DescribeModelRequest(), timeout=5).max_concurrent == 1
                assert time.monotonic() - started < 1.0
            requests = [pb2.TranscribeRequest(config=FAST), pb2.TranscribeRequest(audio=JFK_MP3)]
            assert list(stub.Transcribe(iter(requests), timeout=60))[-1].WhichOneof("event") == "summary"
        # 4 at once: the fifth and later are refused at once, not left waiting for a thread
        assert len(answered) == 4 and all(answer.service for answer in answered)
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 8
        # after --upload-idle-seconds (5) without a request the idle ones are ended and make room
        time.sleep(7)
        open_stream, more = streams[0]
        more.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        with pytest.raises(grpc.RpcError) as raised:
            next(open_stream)
        assert raised.value.code() == grpc.StatusCode.CANCELLED
        fresh, fresh_more = _open_reflection_stream(small_server.addr, channels)
        assert next(fresh).list_services_response.service
        fresh_more.put(None)
    finally:
        for stream, more in streams:
            more.put(None)
            stream.cancel()
        for channel in channels:
            channel.close()


def test_a_client_that_stops_reading_is_cancelled_and_frees_its_slot(small_server: ServerProcess) -> None:
    """A's small receive window stands in for a long transcription's answers that fill a normal one;
    grpc's send then waits for good, and the watchdog must end it so that B gets the slot."""
    options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    audio = clip_path("multilingual.mp3").read_bytes()
    config = pb2.TranscribeConfig(beam_size=1, word_timestamps=True, request_id="not-reading")
    with grpc.insecure_channel(small_server.addr, options=options) as slow:
        a = pb2_grpc.TranscriberStub(slow).Transcribe(
            iter([pb2.TranscribeRequest(config=config), pb2.TranscribeRequest(audio=audio)]), timeout=120
        )
        assert next(a).WhichOneof("event") == "progress"  # then A reads nothing more
        time.sleep(1)
        with grpc.insecure_channel(small_server.addr) as channel:
            started = time.monotonic()
            requests = [pb2.TranscribeRequest(config=FAST), pb2.TranscribeRequest(audio=JFK_MP3)]
            answers = list(pb2_grpc.TranscriberStub(channel).Transcribe(iter(requests), timeout=40))
            waited = time.monotonic() - started
        assert answers[-1].WhichOneof("event") == "summary"
        with pytest.raises(grpc.RpcError) as raised:
            list(a)  # what A had buffered, then the cancel
        assert raised.value.code() == grpc.StatusCode.CANCELLED
    line = small_server.wait_for_log(r".*request_id=not-reading .*").group(0)
    assert "outcome=RESPONSE_IDLE" in line
    assert waited < 30, waited  # the idle limit (5 s), a check (1 s), A's decoding so far, and B's


def test_an_oversize_message_is_a_permanent_payload_too_large(server: ServerProcess) -> None:
    """grpc refuses it before the servicer sees it, without a trailer: not a busy server to retry."""
    spec = pb2.AudioSpec(format=pb2.AUDIO_FORMAT_PCM_S16LE, sample_rate=16000, channels=1)
    requests = [
        pb2.TranscribeRequest(config=pb2.TranscribeConfig(audio=spec)),
        pb2.TranscribeRequest(audio=bytes(5 * 1024 * 1024)),
    ]
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with (
        grpc.insecure_channel(server.addr, options=options) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        list(pb2_grpc.TranscriberStub(channel).Transcribe(iter(requests), timeout=60))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    error = InferenceError.from_rpc(raised.value)
    assert isinstance(error, LimitExceeded) and error.code == "PAYLOAD_TOO_LARGE", error
    assert not classify(error).transient  # a job fails at once instead of sending it again and again
    # our own client's config over 4 MiB: grpc refuses to send it, the same permanent code
    with TranscriberClient(server.addr, timeout=60) as client, pytest.raises(LimitExceeded) as refused:
        list(client.transcribe(JFK_MP3, initial_prompt="a " * (3 * 1024 * 1024)))
    assert refused.value.code == "PAYLOAD_TOO_LARGE", refused.value


def test_processing_seconds_count_from_the_config_not_the_stream_opening(server: ServerProcess) -> None:
    sent = {}

    def late_config() -> Iterator[pb2.TranscribeRequest]:
        time.sleep(3.0)
        sent["config"] = time.monotonic()
        yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(beam_size=1, request_id="late-config"))
        yield pb2.TranscribeRequest(audio=JFK_MP3)

    with grpc.insecure_channel(server.addr) as channel:
        answers = list(pb2_grpc.TranscriberStub(channel).Transcribe(late_config(), timeout=60))
        took = time.monotonic() - sent["config"]
    reported = answers[-1].summary.processing_seconds
    assert 0 < reported <= took + 0.1, (reported, took)
    line = server.wait_for_log(r".*request_id=late-config .*").group(0)
    logged = float(line.split("processing_seconds=")[1].split()[0])
    assert logged <= took + 0.1, (logged, took)


def test_unknown_fields_in_an_audio_message_are_refused(server: ServerProcess) -> None:
    config = pb2.TranscribeRequest(config=FAST).SerializeToString()
    audio = pb2.TranscribeRequest(audio=JFK_MP3).SerializeToString()
    unknown = b"\xa0\x06\x01"  # field 100, varint 1
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(_raw_transcribe(channel)(iter([config, audio + unknown]), timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "does not know" in raised.value.details() and "100" in raised.value.details()
    assert dict(raised.value.trailing_metadata())["cliptext-error-code"] == "VALIDATION_ERROR"


def test_a_list_of_ipv4_and_ipv6_servers_keeps_both() -> None:
    assert channel_target("127.0.0.1:36221,[::1]:43701") == "ipv6:[::ffff:127.0.0.1]:36221,[::1]:43701"
    assert channel_target(["[::1]:5", "localhost:7"]) == "ipv6:[::1]:5,[::ffff:127.0.0.1]:7"
    assert channel_target("10.0.0.1:1,10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"


def test_calls_reach_an_ipv4_and_an_ipv6_server_from_one_list(server: ServerProcess, start) -> None:
    """The shared server (IPv4, max_concurrent 4) and one on [::1] with 1: DescribeModel tells them apart."""
    v6 = start("--max-concurrent", "1", "--max-queue", "0", addr="[::1]:0", kind=V6Server)
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    with TranscriberClient(f"{server.addr},{v6.addr}", timeout=10) as client:
        while seen != {1, 4} and time.monotonic() < deadline:
            seen.add(client.describe_model().max_concurrent)
    assert seen == {1, 4}
