"""`python -m inference.server`: the gRPC inference server (Transcriber + health + reflection).

Health says NOT_SERVING until the model is loaded, then SERVING; SIGTERM/SIGINT turn it back to
NOT_SERVING, refuse new calls and let the calls in flight finish within the grace period; those still
running then end UNAVAILABLE with the INFERENCE_UNAVAILABLE trailer.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings, configuration_error, port_in_use, settings_or_exit
from inference import metrics
from inference.audio_upload import AudioLimits
from inference.engine_threads import EngineThreads
from inference.limits import Admission, UploadIdle, UploadWatchdog
from inference.servicer import Loaded, TranscriberServicer, add_transcriber
from inference.stubs import SERVICE_NAME, pb2
from inference.types import EngineError

log = logging.getLogger("inference.server")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # audio chunks are 1 MiB; room for a config and framing
# Clients ping during calls to notice a vanished server (inference.client.KEEPALIVE_SECONDS); grpc's
# default refuses pings closer than 5 minutes apart and closes the connection on the third
MIN_CLIENT_PING_SECONDS = 1
# The server pings too: a client host gone mid-call frees its decoding slot within these two
KEEPALIVE_SECONDS, KEEPALIVE_TIMEOUT_SECONDS = 60, 20
EXTRA_THREADS = 4  # health checks, DescribeModel and refusals while every other thread is busy
# reflection streams open at once, each holding a thread: grpcui and Postman keep theirs open, idle,
# for as long as they run (ended after --upload-idle-seconds without a request); more are refused
REFLECTION_STREAMS = 4
# grpcio-reflection serves only v1alpha; v1 (what grpcurl and grpcui ask first) has the same messages,
# field for field, under another package, so the same handler answers both names. Not listed by
# list_services: its descriptor is not in grpcio-reflection, and a listed service must describe
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# on CUDA each engine thread warms up on every decoder shape before SERVING, about 38 s per thread on an
# H200, and 2 streams gave 94% of the throughput of 4 there (docs/deploy.md)
GPU_STREAMS = 2
# after the grace period the calls still running are told to stop (TranscriberServicer.cut_off), and each
# stops within one 30 s window of decoding (seconds on a CPU for tiny) with its status and trailer: this
# long, then grpc cancels whatever is left (no trailer; a call stalled in its upload, a window of a large
# model on a slow CPU). Grace 30 + 15 + 5 stays under compose's stop_grace_period of 60 s
CUT_OFF_SECONDS = 15.0
# a handler has returned before grpc sends the status it aborted with: this long for those to go out
# before grpc cancels the calls left (health Watch and reflection streams), which would replace them
STATUS_FLUSH_SECONDS = 5.0
# after grpc's cancel each handler still stops within a window: the server waits up to this before it exits
HANDLERS_END_SECONDS = 60.0
# what an error about a setting names: the flag when it was given, else the environment variable
SETTING_NAMES = {"addr": ("--addr", "INFERENCE_ADDR"), "model_dir": ("--model-dir", "CLIPTEXT_MODEL_DIR")}
# grpc's own log line when add_insecure_port fails (the reason is what follows its last ": ")
GRPC_BIND_FAILED = "Failed to add port to server: "


class ListenError(OSError):
    """The server cannot listen on its address (in use, not this host's, no such host)."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"{addr}: {reason}")
        self.addr = addr
        self.reason = reason


def default_max_concurrent(device: str) -> int:
    """Streams decoded at once when none is configured: one per core on the CPU, GPU_STREAMS where the
    model will try CUDA (16 cores would otherwise mean 16 threads to warm, ten minutes before SERVING)."""
    if device != "cpu":
        import onnxruntime as ort

        from inference.model import CUDA, has_nvidia_device

        if CUDA in ort.get_available_providers() and (device == "cuda" or has_nvidia_device()):
            return GPU_STREAMS
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ServerConfig:
    addr: str
    model_dir: Path
    precision: str
    device: str
    threads: int
    max_concurrent: int
    max_queue: int
    max_audio_bytes: int
    max_audio_seconds: float
    grace_seconds: float
    upload_idle_seconds: float
    flags_given: frozenset[str] = frozenset()  # the SETTING_NAMES given as flags

    def setting_name(self, field: str) -> str:
        """What an error about `field` tells the operator to change: its flag or its variable."""
        flag, variable = SETTING_NAMES[field]
        return flag if field in self.flags_given else variable


class _StoreGiven(argparse.Action):
    """argparse's store, noting in `flags_given` that the flag was given (ServerConfig.setting_name)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.flags_given = namespace.flags_given | {self.dest}


def parse_args(argv: list[str] | None, settings: Settings) -> ServerConfig:
    """Settings from the environment (cliptext/settings.py), overridden by flags."""
    parser = argparse.ArgumentParser(prog="python -m inference.server", description=__doc__.splitlines()[0])
    parser.set_defaults(flags_given=frozenset())
    parser.add_argument(
        "--addr",
        action=_StoreGiven,
        default=settings.inference_addr,
        help="host:port to listen on (port 0: any)",
    )
    parser.add_argument("--model-dir", action=_StoreGiven, type=Path, default=settings.model_dir)
    parser.add_argument("--precision", default=settings.inference_precision, help="auto|fp32|fp16|int8")
    parser.add_argument("--device", default=settings.inference_device, help="auto|cpu|cuda")
    parser.add_argument(
        "--threads", type=int, default=settings.inference_threads, help="ONNX threads, 0 = auto"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=settings.inference_max_concurrent,
        help=f"streams decoded at once (default: one per core on the CPU, {GPU_STREAMS} on a GPU)",
    )
    parser.add_argument("--max-queue", type=int, default=settings.inference_max_queue)
    parser.add_argument("--max-audio-bytes", type=int, default=settings.max_audio_bytes)
    parser.add_argument("--max-audio-seconds", type=float, default=settings.max_audio_seconds)
    parser.add_argument("--grace", type=float, default=settings.inference_grace_seconds, dest="grace_seconds")
    parser.add_argument(
        "--upload-idle-seconds",
        type=float,
        default=settings.inference_upload_idle_seconds,
        help="cancel a call whose client sends no message for this long while uploading",
    )
    args = parser.parse_args(argv)
    if args.max_concurrent is None:
        args.max_concurrent = default_max_concurrent(args.device)
    if args.max_concurrent < 1 or args.max_queue < 0:
        parser.error("--max-concurrent must be >= 1 and --max-queue >= 0")
    if not args.upload_idle_seconds > 0:
        parser.error("--upload-idle-seconds must be > 0")
    return ServerConfig(**vars(args))


def server_version() -> str:
    try:
        return version("cliptext")
    except PackageNotFoundError:
        return "0.0.0+source"


def build_server(config: ServerConfig) -> tuple[grpc.Server, int, TranscriberServicer, health.HealthServicer]:
    """The server (not started yet) bound to config.addr, and the port it really got (for port 0).

    Every call that holds a thread is bounded by its own limit: transcriptions by Admission (refused at
    once beyond max_concurrent + max_queue), reflection streams by REFLECTION_STREAMS; health checks and
    DescribeModel are quick (and Watch holds no thread). So no maximum_concurrent_rpcs: grpc's cap
    counted idle streams too, and refused health checks once a few clients left theirs open.
    """
    workers = config.max_concurrent + config.max_queue + REFLECTION_STREAMS + EXTRA_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_SECONDS * 1000),
            ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
        ],
    )
    servicer = TranscriberServicer(
        Admission(config.max_concurrent, config.max_queue),
        AudioLimits(config.max_audio_bytes, config.max_audio_seconds),
        UploadWatchdog(config.upload_idle_seconds),
    )
    add_transcriber(servicer, server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection(
        MethodReflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)),
        server,
        UploadWatchdog(config.upload_idle_seconds, min_rate=0),
    )
    return server, listen(server, config.addr), servicer, health_servicer


def listen(server: grpc.Server, addr: str) -> int:
    """server.add_insecure_port(addr), raising ListenError with grpc's reason when it fails: grpc logs the
    reason itself ("Address already in use") and raises a RuntimeError that has none (or returns 0).
    A port over 65535 is refused first: grpc took it modulo 65536 and listened on another port."""
    _, _, port_text = addr.rpartition(":")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ListenError(addr, "the port must be a number from 0 to 65535")
    with captured_stderr() as said:
        try:
            port = server.add_insecure_port(addr)
        except RuntimeError:
            port = 0
    reasons = [line for line in said if GRPC_BIND_FAILED in line]
    sys.stderr.writelines(line for line in said if line not in reasons)  # anything else grpc said
    sys.stderr.flush()
    if port == 0:
        reason = reasons[-1].rsplit(": ", 1)[-1].strip().rstrip(")") if reasons else "cannot be bound"
        raise ListenError(addr, reason)
    return port


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """The lines written to file descriptor 2 inside the block (grpc's C core writes there), in the list
    it yields once the block has ended; they are written nowhere else."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines(keepends=True))


class MethodReflection(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, but a method's full name finds its file as the protocol says: the
    protobuf pool finds services, messages and fields, not methods, so `grpcurl describe
    cliptext.inference.v1.Transcriber.Transcribe` was "Symbol not found" (grpc/grpc#34743)."""

    def _file_containing_symbol(self, request, fully_qualified_name):
        service, _, method = fully_qualified_name.rpartition(".")
        try:
            if method in self._pool.FindServiceByName(service).methods_by_name:
                fully_qualified_name = service
        except KeyError:
            pass
        return super()._file_containing_symbol(request, fully_qualified_name)


def add_reflection(
    servicer: reflection.ReflectionServicer, server: grpc.Server, idle: UploadWatchdog
) -> None:
    """reflection.enable_server_reflection, but at most REFLECTION_STREAMS streams open at once (more
    are refused RESOURCE_EXHAUSTED), each ended after `idle`'s seconds without a request; served as both
    v1alpha and v1 (REFLECTION_V1)."""
    open_streams = threading.BoundedSemaphore(REFLECTION_STREAMS)

    def bounded(request_iterator, context: grpc.ServicerContext):
        if not open_streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{REFLECTION_STREAMS} reflection streams already open"
            )
        try:
            yield from servicer.ServerReflectionInfo(idle.watch(iter(request_iterator), context), context)
        except UploadIdle:  # cancelled: the client must open a new stream for its next request
            pass
        finally:
            open_streams.release()

    handler = grpc.stream_stream_rpc_method_handler(
        bounded,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (reflection.SERVICE_NAME, REFLECTION_V1)
        )
    )


def load(config: ServerConfig) -> Loaded:
    """Load the model and engine (slow: seconds) and describe what was really loaded."""
    from inference.model import CUDA, OnnxWhisper
    from inference.transcribe import WhisperEngine

    model = OnnxWhisper(
        config.model_dir, precision=config.precision, device=config.device, threads=config.threads
    )
    cfg = model.config
    description = pb2.ModelDescription(
        name=cfg.name,
        languages=list(cfg.language_codes) if cfg.is_multilingual else ["en"],
        n_mels=cfg.n_mels,
        multilingual=cfg.is_multilingual,
        precision=model.precision,
        execution_provider=model.provider,
        version=server_version(),
        available_precisions=list(cfg.precisions),
        max_concurrent=config.max_concurrent,
        max_audio_bytes=config.max_audio_bytes,
        max_audio_seconds=config.max_audio_seconds,
    )
    engine = WhisperEngine(model)
    threads = EngineThreads(config.max_concurrent)
    if model.provider == CUDA:
        seconds = threads.warm(model.warm_up)
        log.info("%d engine threads warmed up on CUDA in %.1f s", threads.size, seconds)
    return Loaded(engine=engine, description=description, threads=threads)


def serve(config: ServerConfig) -> None:
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server, port, servicer, health_servicer = build_server(config)
    server.start()
    host = config.addr.rsplit(":", 1)[0]
    log.info("listening on %s:%d (NOT_SERVING until the model is loaded)", host, port)
    started = time.monotonic()
    try:
        loaded = load(config)
    except EngineError:
        server.stop(0)
        raise
    servicer.loaded = loaded
    desc = loaded.description
    log.info(
        "model %s loaded in %.1f s: precision %s, execution provider %s; "
        "max_concurrent=%d max_queue=%d max_audio_bytes=%d max_audio_seconds=%.0f",
        desc.name,
        time.monotonic() - started,
        desc.precision,
        desc.execution_provider,
        config.max_concurrent,
        config.max_queue,
        config.max_audio_bytes,
        config.max_audio_seconds,
    )
    if not stop.is_set():
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("SERVING")
    while not stop.wait(1.0):
        pass
    # refuse first, then say so: a call made after the log line is never accepted (and then cancelled
    # by grpc's stop) but refused, UNAVAILABLE, so its caller goes to another server
    servicer.draining = True
    health_servicer.enter_graceful_shutdown()
    # grpc's own cancel ("Cancelling all calls", no trailer) only as a last resort, after ours below
    server.stop(config.grace_seconds + CUT_OFF_SECONDS + STATUS_FLUSH_SECONDS)
    log.info(
        "NOT_SERVING; refusing new calls, waiting up to %.0f s for calls in flight", config.grace_seconds
    )
    drain(server, servicer, config.grace_seconds)
    log.info("stopped")


def drain(server: grpc.Server, servicer: TranscriberServicer, grace_seconds: float) -> None:
    """Let the transcriptions in flight finish for `grace_seconds`, then stop those still running: each
    ends UNAVAILABLE "the server is shutting down" with the INFERENCE_UNAVAILABLE trailer, as the contract
    says, within one window of decoding, and its client goes to another server. grpc then cancels what
    is left after CUT_OFF_SECONDS (health Watch and reflection streams, a call stalled in its upload, which
    sees cut_off only at its next message), and the handlers get HANDLERS_END_SECONDS to return."""
    if not servicer.wait_for_handlers(grace_seconds):
        log.info("grace period over: stopping the transcriptions still running")
        servicer.cut_off.set()
        servicer.wait_for_handlers(CUT_OFF_SECONDS)
    server.stop(STATUS_FLUSH_SECONDS).wait()  # at once unless Watch or reflection streams are open
    if not servicer.wait_for_handlers(HANDLERS_END_SECONDS):
        log.warning("stopping with transcriptions still running")


def start_metrics(port: int) -> None:
    """The metrics exporter; a port it cannot listen on stops the start with one line naming it."""
    try:
        metrics.start_exporter(port)
    except OSError as error:
        raise port_in_use("CLIPTEXT_INFERENCE_METRICS_PORT", port, error) from None


def main(argv: list[str] | None = None) -> int:
    settings = settings_or_exit()
    configure_logging(settings)
    config = parse_args(argv, settings)  # before the exporter: --help needs no free metrics port
    start_metrics(settings.inference_metrics_port)
    try:
        serve(config)
    except ListenError as error:
        raise configuration_error(
            f"{config.setting_name('addr')} must be a host:port this host can listen on, "
            f"got {error.addr!r} ({error.reason})"
        ) from None
    except EngineError as error:  # a missing or damaged export: one line that names the file and setting
        log.error("cannot load the model at %s: %s", config.setting_name("model_dir"), error.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
