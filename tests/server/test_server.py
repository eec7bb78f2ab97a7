"""The inference server end to end: a real server process, the real model, the real client."""

from __future__ import annotations

import io
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from inference.audio_upload import AudioFormat
from inference.client import (
    InvalidRequest,
    LimitExceeded,
    Progress,
    Summary,
    TranscriberClient,
    Unavailable,
)
from inference.stubs import SERVICE_NAME, pb2, pb2_grpc
from inference.types import Segment
from tests.media import clip_path
from tests.server.conftest import ServerProcess, health_status


def _collect(events) -> tuple[list[Segment], list[Progress], Summary]:
    segments, progress, summaries = [], [], []
    for event in events:
        {Segment: segments, Progress: progress, Summary: summaries}[type(event)].append(event)
    assert len(summaries) == 1
    return segments, progress, summaries[0]


def _text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", "", text.lower()).split()


def _pcm(name: str, rate: int | None = None) -> tuple[bytes, AudioFormat]:
    """A clip as raw interleaved f32le at its own rate."""
    samples, file_rate = sf.read(clip_path(name), dtype="float32", always_2d=True)
    return samples.astype("<f4").tobytes(), AudioFormat("f32le", file_rate, samples.shape[1])


# greedy, no temperature fallback: repeated speech would otherwise trip the compression-ratio check
_FAST = {"beam_size": 1, "temperatures": (0.0,)}


def _long_pcm(seconds: float) -> tuple[bytes, AudioFormat]:
    """jfk repeated to `seconds`, raw s16le 16 kHz mono: several 30 s windows of real speech."""
    samples, rate = sf.read(clip_path("jfk.flac"), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    mono = soxr.resample(mono, rate, 16000)
    reps = int(np.ceil(seconds * 16000 / len(mono)))
    audio = np.tile(mono, reps)[: int(seconds * 16000)]
    return (audio * 32767).astype("<i2").tobytes(), AudioFormat("s16le", 16000, 1)


def test_health_is_serving_after_the_model_loaded(server: ServerProcess) -> None:
    for service in ("", SERVICE_NAME):
        assert health_status(server.addr, service) == health_pb2.HealthCheckResponse.SERVING
    provider = server.wait_for_log(r"execution provider (\w+)").group(1)
    assert provider in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_reflection_lists_the_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(database)
        method = pool.FindServiceByName(SERVICE_NAME).FindMethodByName("Transcribe")
        assert method.client_streaming and method.server_streaming
        assert method.input_type.full_name == "cliptext.inference.v1.TranscribeRequest"


def test_describe_model(server: ServerProcess) -> None:
    with TranscriberClient(server.addr, timeout=10) as client:
        description = client.describe_model()
    assert description.name == "whisper-tiny.en"
    assert description.languages == ["en"] and not description.multilingual
    assert description.n_mels == 80
    assert description.precision == "fp32"
    assert description.execution_provider in server.wait_for_log(r"execution provider \w+").group(0)
    assert description.max_concurrent == 4


def test_jfk_through_the_stream_gives_the_reference_text(
    server: ServerProcess, reference_text: dict, transcripts: dict
) -> None:
    with TranscriberClient(server.addr, timeout=120) as client:
        events = list(client.transcribe(clip_path("jfk.flac"), beam_size=5, request_id="jfk-1"))
    segments, progress, summary = _collect(events)
    assert _text(segments) == reference_text["jfk.flac"]
    assert _words(_text(segments)) == _words(transcripts["jfk.flac"]["text"])
    assert isinstance(events[0], Progress) and events[0].seconds_done == 0
    assert progress[0].total_seconds == pytest.approx(11.0, abs=0.05)
    assert progress[-1].seconds_done == progress[-1].total_seconds
    assert isinstance(events[-1], Summary)
    assert summary.duration == pytest.approx(11.0, abs=0.05)
    assert summary.language == "en" and summary.model == "whisper-tiny.en"
    assert summary.segments == len(segments) and summary.channels == 1
    assert all(s.words is None for s in segments)
    line = next(line for line in server.call_lines() if "request_id=jfk-1" in line)
    assert "outcome=OK" in line and "audio_seconds=11.00" in line
    assert "fellow" not in server.log()  # no text in the logs


def test_the_last_progress_says_all_of_it_when_the_audio_ends_without_speech(launch) -> None:
    """tiny.en finds no segment in multilingual.mp3's German half: progress stopped at half the total."""
    server = launch("--max-concurrent", "1")  # 60 s: over the shared server's limit
    with TranscriberClient(server.addr, timeout=120) as client:
        events = list(client.transcribe(clip_path("multilingual.mp3"), **_FAST))
    segments, progress, _ = _collect(events)
    assert segments[-1].end < progress[-1].total_seconds / 2 + 5
    assert progress[-1].seconds_done == progress[-1].total_seconds
    assert isinstance(events[-2], Progress) and isinstance(events[-1], Summary)


def test_word_timestamps_and_a_file_object(server: ServerProcess) -> None:
    data = clip_path("jfk.mp3").read_bytes()
    with TranscriberClient(server.addr, timeout=120) as client:
        segments, _, _ = _collect(client.transcribe(io.BytesIO(data), word_timestamps=True, beam_size=1))
    words = [w for s in segments for w in s.words]
    assert "".join(w.word for w in words).strip() == _text(segments)
    assert "americans" in _words(" ".join(w.word for w in words))
    assert all(0 <= w.start <= w.end <= 11.1 and 0 <= w.probability <= 1 for w in words)


def test_raw_pcm_and_encoded_give_the_same_text(server: ServerProcess) -> None:
    data, fmt = _pcm("jfk.flac")
    assert fmt.sample_rate == 44100
    with TranscriberClient(server.addr, timeout=120) as client:
        encoded, _, _ = _collect(client.transcribe(clip_path("jfk.flac"), beam_size=1))
        pcm, _, summary = _collect(client.transcribe(data, audio_format=fmt, beam_size=1))
    assert _text(pcm) == _text(encoded)
    assert summary.duration == pytest.approx(11.0, abs=0.01)


def test_split_channels_over_pcm(server: ServerProcess, transcripts: dict) -> None:
    data, fmt = _pcm("stereo_diarization.wav")
    assert fmt.channels == 2
    with TranscriberClient(server.addr, timeout=120) as client:
        segments, progress, summary = _collect(
            client.transcribe(data, audio_format=fmt, channels="split", beam_size=1)
        )
    assert summary.channels == 2
    assert {s.channel for s in segments} == {0, 1}
    right = _text([s for s in segments if s.channel == 1])
    assert "horizon" in right.lower()
    assert progress[0].total_seconds == pytest.approx(2 * summary.duration)


def test_four_concurrent_streams_are_all_correct(server: ServerProcess, reference_text: dict) -> None:
    clips = ["jfk.flac", "jfk.mp3", "jfk.flac", "jfk.mp3"]

    def run(name: str) -> str:
        with TranscriberClient(server.addr, timeout=300) as client:
            segments, _, _ = _collect(client.transcribe(clip_path(name), beam_size=5))
        return _text(segments)

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(run, clips))
    assert texts == [reference_text[name] for name in clips]


def test_garbage_bytes_are_invalid_argument(server: ServerProcess) -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    with TranscriberClient(server.addr, timeout=30) as client:
        with pytest.raises(InvalidRequest) as raised:
            list(client.transcribe(garbage))
        assert raised.value.status == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.code == "AUDIO_DECODE_ERROR"
        with pytest.raises(InvalidRequest, match="empty"):
            list(client.transcribe(b""))


def test_invalid_options_are_invalid_argument(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        requests = [pb2.TranscribeRequest(config=pb2.TranscribeConfig(beam_size=0))]
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(iter(requests), timeout=10))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "beam_size" in raised.value.details()
        assert dict(raised.value.trailing_metadata())["cliptext-error-code"] == "VALIDATION_ERROR"
        no_config = [pb2.TranscribeRequest(audio=b"\x00" * 10)]
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(iter(no_config), timeout=10))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_over_limit_bytes_and_seconds_are_resource_exhausted(server: ServerProcess) -> None:
    too_many = b"\x00" * (5 * 1024 * 1024)
    long_pcm, fmt = _long_pcm(45.0)
    with TranscriberClient(server.addr, timeout=60) as client:
        # announced size (bytes) and discovered while streaming (a file object of unknown size)
        for source in (too_many, io.BufferedReader(io.BytesIO(too_many))):
            with pytest.raises(LimitExceeded) as raised:
                list(client.transcribe(source))
            assert raised.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert raised.value.code == "PAYLOAD_TOO_LARGE"
        with pytest.raises(LimitExceeded) as raised:
            list(client.transcribe(clip_path("multilingual.mp3")))  # 60 s, over the 40 s limit
        assert raised.value.code == "AUDIO_TOO_LONG"
        with pytest.raises(LimitExceeded) as raised:
            list(client.transcribe(long_pcm, audio_format=fmt))
        assert raised.value.code == "AUDIO_TOO_LONG"


@pytest.fixture(scope="module")
def single_slot_server(launch) -> ServerProcess:
    return launch("--max-concurrent", "1", "--max-queue", "1", "--max-audio-seconds", "600")


def test_cancel_mid_stream_frees_the_slot(single_slot_server: ServerProcess, transcripts: dict) -> None:
    long_pcm, fmt = _long_pcm(150.0)  # five windows
    with TranscriberClient(single_slot_server.addr, timeout=300) as client:
        started = time.monotonic()
        stream = client.transcribe(long_pcm, audio_format=fmt, request_id="to-cancel", **_FAST)
        first_segment = next(e for e in stream if isinstance(e, Segment))
        first_window = time.monotonic() - started
        assert first_segment.start < 30
        stream.close()  # cancels the call
        started = time.monotonic()
        segments, _, _ = _collect(client.transcribe(clip_path("jfk.flac"), beam_size=1))
        next_call = time.monotonic() - started
    assert _words(_text(segments)) == _words(transcripts["jfk.flac"]["text"])
    # the cancelled call gave up within about one window, not after its four others
    assert next_call < 3 * first_window + 5, (next_call, first_window)
    line = single_slot_server.wait_for_log(r".*request_id=to-cancel .*").group(0)
    assert "outcome=CANCELLED" in line and "audio_seconds=150.00" in line
    decoded = float(re.search(r"decoded_seconds=([\d.]+)", line).group(1))
    assert 0 < decoded <= 60, line  # at most the window in progress when the cancel came


def test_a_full_queue_is_resource_exhausted(single_slot_server: ServerProcess) -> None:
    """One running + one waiting place: two calls still uploading hold both, a third is refused at once."""
    release = threading.Event()

    def held_upload():
        yield pb2.TranscribeRequest(config=pb2.TranscribeConfig(request_id="hold"))
        yield pb2.TranscribeRequest(audio=b"\x00" * 1000)
        release.wait(30)

    with grpc.insecure_channel(single_slot_server.addr) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        held = [stub.Transcribe(held_upload(), timeout=60) for _ in range(2)]
        time.sleep(0.5)  # both admitted
        started = time.monotonic()
        client = TranscriberClient(single_slot_server.addr, retries=0, timeout=30)
        with client, pytest.raises(LimitExceeded) as raised:
            list(client.transcribe(clip_path("jfk.mp3")))
        assert raised.value.code == "SERVICE_UNAVAILABLE"
        assert time.monotonic() - started < 5
        for call in held:
            call.cancel()
        release.set()
    with TranscriberClient(single_slot_server.addr, retries=0, timeout=120) as client:
        assert isinstance(list(client.transcribe(clip_path("jfk.mp3"), **_FAST))[-1], Summary)


def test_announced_size_must_match(server: ServerProcess) -> None:
    config = pb2.TranscribeConfig(audio=pb2.AudioSpec(total_bytes=100))
    requests = [pb2.TranscribeRequest(config=config), pb2.TranscribeRequest(audio=b"\x00" * 50)]
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(pb2_grpc.TranscriberStub(channel).Transcribe(iter(requests), timeout=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(raised.value.trailing_metadata())["cliptext-error-code"] == "UPLOAD_SIZE_MISMATCH"


def test_round_robin_over_two_servers(server: ServerProcess, single_slot_server: ServerProcess) -> None:
    before = (len(server.call_lines()), len(single_slot_server.call_lines()))
    data, fmt = _pcm("jfk.flac")
    short = data[: len(data) // 4]  # 2.75 s
    with TranscriberClient(f"{server.addr},{single_slot_server.addr}", timeout=120) as client:
        for _ in range(4):
            _collect(client.transcribe(short, audio_format=fmt, beam_size=1))
    after = (len(server.call_lines()), len(single_slot_server.call_lines()))
    assert after[0] > before[0] and after[1] > before[1]


def test_client_retries_until_the_server_is_ready(launch) -> None:
    starting = launch("--max-concurrent", "1", wait=False)
    # listening at once, but loading the model (seconds): health says so and calls are UNAVAILABLE
    assert health_status(starting.addr, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    with TranscriberClient(starting.addr, retries=0) as client, pytest.raises(Unavailable, match="loading"):
        client.describe_model()
    client = TranscriberClient(starting.addr, timeout=120, retries=12, backoff_seconds=0.1)
    with client:
        segments, _, _ = _collect(client.transcribe(clip_path("jfk.mp3"), beam_size=1))
    assert "Americans" in _text(segments)
    assert starting.stop() == 0


def test_sigterm_lets_the_call_in_flight_finish(launch) -> None:
    server = launch("--max-concurrent", "1", "--grace", "300")
    long_pcm, fmt = _long_pcm(45.0)  # two windows, the SIGTERM comes before the first is decoded
    results: list = []
    first = threading.Event()

    def run() -> None:
        with TranscriberClient(server.addr, timeout=300, retries=0) as client:
            try:
                for event in client.transcribe(long_pcm, audio_format=fmt, **_FAST):
                    results.append(event)
                    first.set()
            except Exception as error:  # reported by the assertions below
                results.append(error)
                first.set()

    queued: list = []

    def wait_in_queue() -> None:
        with TranscriberClient(server.addr, timeout=300, retries=0) as client:
            try:
                list(client.transcribe(clip_path("jfk.mp3"), beam_size=1))
            except Exception as error:  # reported by the assertions below
                queued.append((error, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    assert first.wait(120)
    waiting = threading.Thread(target=wait_in_queue)
    waiting.start()
    time.sleep(2.0)  # uploaded, waiting for the one slot
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    server.wait_for_log("NOT_SERVING; refusing new calls")
    with TranscriberClient(server.addr, timeout=10, retries=0) as client, pytest.raises(Exception) as refused:
        list(client.transcribe(clip_path("jfk.mp3")))
    # the queued call is sent away at once, to another server, not held until the grace period ends
    waiting.join(30)
    [(error, ended)] = queued
    assert (error.status, error.code) == (grpc.StatusCode.UNAVAILABLE, "INFERENCE_UNAVAILABLE"), error
    assert ended - signalled < 10
    thread.join(300)
    assert isinstance(results[-1], Summary), results[-1]
    assert results[-1].duration == pytest.approx(45.0)
    assert server.process.wait(60) == 0
    assert getattr(refused.value, "status", None) == grpc.StatusCode.UNAVAILABLE, refused.value
