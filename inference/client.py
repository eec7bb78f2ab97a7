"""`TranscriberClient`: the Python client of the inference servers, used by workers and other services.

It streams a file in 256 KiB chunks and yields segments, progress and a summary as they come; balances
over several servers (round robin); retries UNAVAILABLE with backoff as long as nothing came back yet.
The channel is created lazily in the process that uses it, so a client made before a fork is safe.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import grpc

from cliptext.errors import ErrorCode
from inference.audio_upload import AudioFormat
from inference.proto_convert import ERROR_CODE_KEY, format_to_spec, message_to_segment, options_to_config
from inference.stubs import pb2, pb2_grpc
from inference.types import Segment, TranscribeOptions

__all__ = [
    "DeadlineExceeded",
    "Event",
    "InferenceError",
    "InvalidRequest",
    "LimitExceeded",
    "Progress",
    "Segment",
    "Summary",
    "TranscriberClient",
    "Unavailable",
]

# a message must arrive whole within the server's --upload-idle-seconds (60): 256 KiB do on a 40 kbit/s link
CHUNK_BYTES = 256 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A call whose peer vanished without closing the connection (a host powered off, a network partition, a
# NAT or load balancer that dropped the flow) sees no error until its deadline, hours for a long file.
# HTTP/2 keepalive pings during a call end it UNAVAILABLE within KEEPALIVE + its timeout instead. The
# server permits pings this often (inference.server.MIN_CLIENT_PING_SECONDS).
KEEPALIVE_SECONDS = 20.0
KEEPALIVE_TIMEOUT_SECONDS = 10.0
_SERVICE_CONFIG = '{"loadBalancingConfig": [{"round_robin": {}}]}'
_FALLBACK_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.VALIDATION_ERROR,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNAVAILABLE: ErrorCode.INFERENCE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.TIMEOUT,
}
# grpc's own refusal of a message over a side's max_*_message_length (4 MiB), which carries no trailer
# ("SERVER: Received message larger than max (5242885 vs. 4194304)"):
# the same message would be refused again, so it is the permanent PAYLOAD_TOO_LARGE, not a busy server
_OVERSIZE_DETAILS = ("Received message larger than max", "Sent message larger than max")


class InferenceError(Exception):
    """A failed call: `status` is the grpc.StatusCode, `code` the Cliptext ErrorCode string."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str):
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> InferenceError:
        status = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        trailing = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        code = trailing.get(ERROR_CODE_KEY) or _fallback_code(status, details)
        kind = _ERRORS_BY_STATUS.get(status, cls)
        return kind(status, code, details)


def _fallback_code(status: grpc.StatusCode, details: str) -> str:
    """The Cliptext code of a failure that came without a trailer (from grpc itself, not the servicer)."""
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED and any(text in details for text in _OVERSIZE_DETAILS):
        return ErrorCode.PAYLOAD_TOO_LARGE
    return _FALLBACK_CODES.get(status, ErrorCode.INTERNAL)


class InvalidRequest(InferenceError):
    """INVALID_ARGUMENT: bad options or audio that cannot be decoded (do not retry)."""


class LimitExceeded(InferenceError):
    """RESOURCE_EXHAUSTED: audio or a message over a limit (code AUDIO_TOO_LONG / PAYLOAD_TOO_LARGE: do
    not retry) or servers busy (SERVICE_UNAVAILABLE)."""


class Unavailable(InferenceError):
    """UNAVAILABLE after every retry: no server reachable or ready."""


class DeadlineExceeded(InferenceError):
    """The deadline passed before the transcription finished."""


_ERRORS_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


@dataclass(frozen=True)
class Progress:
    seconds_done: float
    total_seconds: float


@dataclass(frozen=True)
class Summary:
    duration: float
    language: str
    language_probability: float
    model: str
    processing_seconds: float
    segments: int
    channels: int


Event = Segment | Progress | Summary
_IN_MEMORY = bytes | bytearray | memoryview


def channel_target(addresses: str | list[str]) -> str:
    """One gRPC target for one or several servers.

    "host:port" and "dns:///name:port" pass through (round robin over every address DNS gives);
    a list or comma list becomes "ipv4:a:p,b:p" (or ipv6:), host names resolved now. A list of both
    families becomes "ipv6:" with the IPv4 ones IPv4-mapped ([::ffff:a]:p): a gRPC target takes one
    family, and gRPC connects to a mapped address over IPv4 (an AF_INET socket where there is no IPv6).
    """
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",")]
    addresses = [a for a in addresses if a]
    if not addresses:
        raise ValueError("no inference server address")
    if len(addresses) == 1:
        return addresses[0]
    resolved: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            ips = [ipaddress.ip_address(host)]
        except ValueError:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            ips = [ipaddress.ip_address(info[4][0]) for info in infos]
        resolved += [(ip, port) for ip in dict.fromkeys(ips)]
    if all(ip.version == 4 for ip, _ in resolved):
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in resolved)
    return "ipv6:" + ",".join(
        f"[::ffff:{ip}]:{port}" if ip.version == 4 else f"[{ip}]:{port}" for ip, port in resolved
    )


class TranscriberClient:
    """Client of one or more inference servers; cheap to create, the channel opens on first use."""

    def __init__(
        self,
        addresses: str | list[str],
        timeout: float | None = None,
        retries: int = 4,
        backoff_seconds: float = 0.25,
        max_backoff_seconds: float = 5.0,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ):
        """`keepalive_seconds`: how often a call pings its server; one unanswered for
        min(KEEPALIVE_TIMEOUT_SECONDS, keepalive_seconds) ends the call UNAVAILABLE."""
        self.target = channel_target(addresses)
        self.timeout = timeout
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.keepalive_ms = int(keepalive_seconds * 1000)
        self.keepalive_timeout_ms = int(min(KEEPALIVE_TIMEOUT_SECONDS, keepalive_seconds) * 1000)
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._pid = 0

    def _stub(self) -> pb2_grpc.TranscriberStub:
        with self._lock:
            if self._channel is None or self._pid != os.getpid():
                # a channel inherited over fork() must not be used: make a new one in this process
                self._channel = grpc.insecure_channel(
                    self.target,
                    options=[
                        ("grpc.service_config", _SERVICE_CONFIG),
                        ("grpc.lb_policy_name", "round_robin"),
                        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.enable_retries", 0),
                        ("grpc.keepalive_time_ms", self.keepalive_ms),
                        ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
                        ("grpc.http2.ping_timeout_ms", self.keepalive_timeout_ms),  # what grpc 1.7x+ obeys
                        ("grpc.keepalive_permit_without_calls", 0),  # only while a call is open
                        ("grpc.http2.max_pings_without_data", 0),  # a long silent call keeps pinging
                        ("grpc.http2.min_time_between_pings_ms", self.keepalive_ms),
                    ],
                )
                self._pid = os.getpid()
            return pb2_grpc.TranscriberStub(self._channel)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None

    def __enter__(self) -> TranscriberClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _backoff(self, attempt: int, deadline: float | None) -> bool:
        """Sleep before retry `attempt` (1, 2, ...); False when no retry is left or time is up."""
        if attempt > self.retries:
            return False
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def describe_model(self, timeout: float | None = None) -> pb2.ModelDescription:
        """The server's ModelDescription (name, languages, precision, execution provider, limits)."""
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            try:
                return self._stub().DescribeModel(
                    pb2.DescribeModelRequest(), timeout=self._remaining(deadline), wait_for_ready=False
                )
            except grpc.RpcError as error:
                attempt += 1
                if error.code() != grpc.StatusCode.UNAVAILABLE or not self._backoff(attempt, deadline):
                    raise InferenceError.from_rpc(error) from None

    def transcribe(
        self,
        source: str | Path | bytes | BinaryIO,
        options: TranscribeOptions | None = None,
        *,
        audio_format: AudioFormat | None = None,
        request_id: str = "",
        timeout: float | None = None,
        **option_overrides,
    ) -> Iterator[Event]:
        """Stream `source` (path, bytes or binary file) and yield Segment / Progress / Summary events.

        Options are a TranscribeOptions and/or its fields as keywords (validated here, before sending).
        `audio_format` describes raw PCM (AudioFormat("s16le", 16000, 1)); default: an encoded file.
        Raises InferenceError subclasses; breaking out of the loop cancels the call on the server.
        """
        options = options or TranscribeOptions()
        if option_overrides:
            options = replace(options, **option_overrides)
        fmt = audio_format or AudioFormat("encoded")
        opener = _Opener(source)
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            with opener.open() as (stream, size):
                config = options_to_config(options, request_id=request_id)
                config.audio.CopyFrom(
                    format_to_spec(AudioFormat(fmt.kind, fmt.sample_rate, fmt.channels, size))
                )
                call = self._stub().Transcribe(
                    _requests(config, stream), timeout=self._remaining(deadline), wait_for_ready=False
                )
                received = False
                try:
                    for response in call:
                        received = True
                        yield _event(response, options.word_timestamps)
                    return
                except grpc.RpcError as error:
                    attempt += 1
                    retry = (
                        not received
                        and error.code() == grpc.StatusCode.UNAVAILABLE
                        and opener.repeatable
                        and self._backoff(attempt, deadline)
                    )
                    if not retry:
                        raise InferenceError.from_rpc(error) from None
                finally:
                    call.cancel()


def _requests(config: pb2.TranscribeConfig, stream: BinaryIO) -> Iterator[pb2.TranscribeRequest]:
    yield pb2.TranscribeRequest(config=config)
    while chunk := stream.read(CHUNK_BYTES):
        yield pb2.TranscribeRequest(audio=chunk)


def _event(response: pb2.TranscribeResponse, with_words: bool) -> Event:
    kind = response.WhichOneof("event")
    if kind == "segment":
        return message_to_segment(response.segment, with_words)
    if kind == "progress":
        return Progress(response.progress.seconds_done, response.progress.total_seconds)
    s = response.summary
    return Summary(
        s.duration, s.language, s.language_probability, s.model, s.processing_seconds, s.segments, s.channels
    )


class _Opener:
    """Opens the source once per attempt; a file object can be sent again only if it is seekable."""

    def __init__(self, source: str | Path | bytes | BinaryIO):
        self.source = source
        self.start: int | None = None
        if not isinstance(source, _IN_MEMORY | str | Path):
            with suppress(AttributeError, OSError):
                self.start = source.tell() if source.seekable() else None

    @property
    def repeatable(self) -> bool:
        return isinstance(self.source, _IN_MEMORY | str | Path) or self.start is not None

    @contextmanager
    def open(self) -> Iterator[tuple[BinaryIO, int]]:
        """(readable stream, total bytes or 0 when unknown)."""
        if isinstance(self.source, str | Path):
            path = Path(self.source)
            with path.open("rb") as handle:
                yield handle, path.stat().st_size
        elif isinstance(self.source, _IN_MEMORY):
            yield BytesIO(self.source), len(self.source)
        else:
            if self.start is not None:
                self.source.seek(self.start)
            yield self.source, 0
