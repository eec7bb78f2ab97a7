"""The Transcriber gRPC servicer: converts messages, runs the engine on its own threads, yields results.

Everything else (limits, PCM, upload spooling, message conversion) lives in pure helpers; errors
become a status code plus the Cliptext error code in the trailing metadata "cliptext-error-code".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message

from cliptext.errors import ErrorCode
from inference import metrics
from inference.audio_upload import AudioLimits, check_announced, received_audio, too_long
from inference.engine_threads import EngineThreads
from inference.limits import (
    Abandoned,
    Admission,
    QueueFull,
    ResponseIdle,
    Sending,
    Ticket,
    UploadIdle,
    UploadWatchdog,
    check_split_windows,
)
from inference.proto_convert import (
    ERROR_CODE_KEY,
    config_to_options,
    reject_unknown,
    segment_to_message,
    spec_to_format,
)
from inference.stubs import SERVICE_NAME, pb2, pb2_grpc
from inference.types import EngineError, Stopped

log = logging.getLogger("inference.server")

_STATUS = {
    ErrorCode.VALIDATION_ERROR: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.AUDIO_DECODE_ERROR: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NO_AUDIO_STREAM: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNSUPPORTED_MEDIA: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UPLOAD_SIZE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.AUDIO_TOO_LONG: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.SERVICE_UNAVAILABLE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INFERENCE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


@dataclass
class Loaded:
    """The engine once the model is in memory, and what DescribeModel reports about it."""

    engine: object  # inference.transcribe.WhisperEngine
    description: pb2.ModelDescription
    threads: EngineThreads  # every model run happens on one of these (warm on CUDA), never the call's


@dataclass
class _Call:
    """What the one log line of a call says (never audio or text)."""

    peer: str
    started: float
    configured: float | None = None  # when the first message (the config) came
    request_id: str = ""
    audio_seconds: float = 0.0
    decoded_seconds: float = 0.0  # how far decoding got (over all channels): less than audio when stopped
    segments: int = 0
    outcome: str = "OK"

    def processing_seconds(self) -> float:
        """From the config on, as the contract says: a client may open its stream well before."""
        return time.monotonic() - (self.started if self.configured is None else self.configured)


class Malformed:
    """A request that did not parse (broken protobuf, a string field that is not UTF-8): grpc's own
    deserializer answered INTERNAL "Exception deserializing request!" for it."""

    def __init__(self, reason: str):
        self.reason = reason

    def refused(self) -> EngineError:
        return EngineError(ErrorCode.VALIDATION_ERROR, f"malformed message: {self.reason}")


def _parsed_or_malformed(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def deserialize(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Malformed(str(error))

    return deserialize


def add_transcriber(servicer: TranscriberServicer, server: grpc.Server) -> None:
    """pb2_grpc.add_TranscriberServicer_to_server, but a request that does not parse reaches the
    servicer (as Malformed) and is answered INVALID_ARGUMENT, as the contract says."""
    handlers = {
        "Transcribe": grpc.stream_stream_rpc_method_handler(
            servicer.Transcribe,
            request_deserializer=_parsed_or_malformed(pb2.TranscribeRequest),
            response_serializer=pb2.TranscribeResponse.SerializeToString,
        ),
        "DescribeModel": grpc.unary_unary_rpc_method_handler(
            servicer.DescribeModel,
            request_deserializer=_parsed_or_malformed(pb2.DescribeModelRequest),
            response_serializer=pb2.ModelDescription.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _message_bytes(request: pb2.TranscribeRequest | Malformed) -> int:
    return len(request.audio) if isinstance(request, pb2.TranscribeRequest) else 0


def _audio_chunks(requests: Iterator[pb2.TranscribeRequest], cut_off: threading.Event) -> Iterator[bytes]:
    for request in requests:
        if cut_off.is_set():  # the grace period ended mid-upload
            raise _shutting_down()
        if isinstance(request, Malformed):
            raise request.refused()
        payload = request.WhichOneof("payload")
        if payload == "config":
            raise EngineError(ErrorCode.VALIDATION_ERROR, "only the first message may carry a config")
        if payload != "audio":  # an empty TranscribeRequest{}
            raise EngineError(ErrorCode.VALIDATION_ERROR, "every message after the first must carry audio")
        reject_unknown(request, "TranscribeRequest")  # as in the config: never silently ignored
        yield request.audio


def loggable_id(request_id: str) -> str:
    """The caller's request_id as the log line shows it: at most 128 characters, whitespace, control
    characters and backslashes escaped (as sent, a newline wrote a forged line into a text log and a
    space a second `outcome=` into the call line)."""
    return "".join(map(_loggable_char, request_id[:128]))


def _loggable_char(char: str) -> str:
    if char.isprintable() and not char.isspace() and char != "\\":
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _shutting_down() -> EngineError:
    return EngineError(ErrorCode.INFERENCE_UNAVAILABLE, "the server is shutting down")


def _gone(context: grpc.ServicerContext) -> str:
    """Why the caller is no longer there: its deadline passed, or it cancelled."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class TranscriberServicer(pb2_grpc.TranscriberServicer):
    def __init__(self, admission: Admission, limits: AudioLimits, watchdog: UploadWatchdog):
        self.admission = admission
        self.limits = limits
        self.watchdog = watchdog
        self.loaded: Loaded | None = None  # set by the server once the model is loaded
        # set by the server when a shutdown begins: grpc's own stop() may cancel a call it has accepted
        # but not started, and a caller must read UNAVAILABLE (go elsewhere), not CANCELLED
        self.draining = False
        # set by the server when the grace period ends: the calls still running stop within a window and
        # end UNAVAILABLE with the trailer, as a waiting call does, not with grpc's own "Cancelling all calls"
        self.cut_off = threading.Event()
        self._handlers = 0  # Transcribe handlers not yet returned (their log line written)
        self._handlers_changed = threading.Condition()

    def wait_for_handlers(self, timeout: float) -> bool:
        """Wait until every Transcribe handler has returned; False if some still run after `timeout`.

        grpc's stop() is done once it has cancelled the calls, not once their handlers return: a server
        that exits then shuts its engine threads while a handler still needs them (a call cut off
        mid-upload goes on with the audio it got, and was logged INTERNAL with a traceback).
        """
        with self._handlers_changed:
            return self._handlers_changed.wait_for(lambda: self._handlers == 0, timeout)

    def _busy(self) -> str:
        """The places, not Admission's counts: those include calls whose client has already gone (one
        that read its summary, or cancelled, still holds its place until its handler returns), and read
        "0 transcriptions running and 1 waiting" on a server with no waiting place."""
        admission = self.admission
        return (
            f"server busy: all places are taken ({admission.max_concurrent} transcribing at once, "
            f"{admission.max_queue} waiting); retry later or on another server"
        )

    def _ready(self) -> Loaded:
        if self.draining:
            raise _shutting_down()
        loaded = self.loaded
        if loaded is None:
            raise EngineError(ErrorCode.INFERENCE_UNAVAILABLE, "the model is still loading")
        return loaded

    @staticmethod
    def _abort(context: grpc.ServicerContext, code: str, message: str) -> None:
        context.set_trailing_metadata(((ERROR_CODE_KEY, str(code)),))
        context.abort(_STATUS.get(code, grpc.StatusCode.INTERNAL), message)

    def DescribeModel(self, request: pb2.DescribeModelRequest, context) -> pb2.ModelDescription:
        try:
            if isinstance(request, Malformed):
                raise request.refused()
            return self._ready().description
        except EngineError as error:
            self._abort(context, error.code, error.message)

    def Transcribe(self, request_iterator: Iterable[pb2.TranscribeRequest], context) -> Iterator:
        call = _Call(peer=context.peer(), started=time.monotonic())
        with self._handlers_changed:
            self._handlers += 1
        metrics.IN_FLIGHT.inc()
        sending: Sending | None = None
        try:
            requests = self.watchdog.watch(iter(request_iterator), context, _message_bytes)
            with closing(self._transcribe(requests, context, call)) as responses:
                for response in responses:
                    with self.watchdog.sending(context) as sending:
                        yield response
            if not context.is_active():
                call.outcome = _gone(context)
        except UploadIdle:  # cancelled by the watchdog: the client is not listening any more
            call.outcome = "UPLOAD_IDLE"
        except ResponseIdle:  # cancelled by the watchdog: the client stopped reading
            call.outcome = "RESPONSE_IDLE"
        except EngineError as error:
            if not context.is_active():  # the client left mid-upload: its cut-off audio is not an error
                call.outcome = _gone(context)
                return
            call.outcome = error.code
            self._abort(context, error.code, error.message)
        except QueueFull:
            call.outcome = "QUEUE_FULL"
            self._abort(context, ErrorCode.SERVICE_UNAVAILABLE, self._busy())
        except (Abandoned, Stopped, grpc.RpcError):  # left while waiting, sending, or the first pass
            if self.cut_off.is_set() and context.is_active():  # stopped by the server's shutdown
                call.outcome = ErrorCode.INFERENCE_UNAVAILABLE
                self._abort(context, call.outcome, _shutting_down().message)
            else:
                call.outcome = _gone(context)
        except GeneratorExit:  # grpc closed the call at a yield: cancelled, by the client or the watchdog
            call.outcome = "RESPONSE_IDLE" if sending is not None and sending.expired else _gone(context)
            raise
        except Exception:
            # anything else is our bug or the machine's (a full disk): logged here, and the caller gets
            # INTERNAL with its trailer, not grpc's UNKNOWN "Exception iterating responses: <our text>"
            call.outcome = "INTERNAL"
            log.exception(
                "transcription failed (request_id=%s)",
                call.request_id,
                extra={"request_id": call.request_id or None},
            )
            self._abort(context, ErrorCode.INTERNAL, "internal error in the inference server")
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.observe_call(call.outcome, call.audio_seconds, time.monotonic() - call.started)
            log.info(
                "transcribe peer=%s request_id=%s audio_seconds=%.2f decoded_seconds=%.2f "
                "processing_seconds=%.3f segments=%d outcome=%s",
                call.peer,
                call.request_id or "-",
                call.audio_seconds,
                call.decoded_seconds,
                call.processing_seconds(),
                call.segments,
                call.outcome,
                extra={"request_id": call.request_id or None},
            )
            with self._handlers_changed:
                self._handlers -= 1
                self._handlers_changed.notify_all()

    def _transcribe(self, requests: Iterator, context, call: _Call) -> Iterator[pb2.TranscribeResponse]:
        loaded = self._ready()
        # admitted before its first message: a stream that sends nothing holds a place (until the
        # watchdog ends it), and streams beyond the places are refused at once instead of each holding
        # one of the server's threads, which health checks and reflection need too
        with self.admission.admit() as ticket:
            first = next(requests, None)
            call.configured = time.monotonic()
            if first is None and not context.is_active():
                raise Abandoned("the caller left before sending a config")
            if isinstance(first, Malformed):
                raise first.refused()
            if first is None or first.WhichOneof("payload") != "config":
                raise EngineError(ErrorCode.VALIDATION_ERROR, "the first message must carry a config")
            reject_unknown(first, "TranscribeRequest")
            config = first.config
            call.request_id = loggable_id(config.request_id)
            options = config_to_options(config)
            loaded.engine.check_options(options)  # before the audio is read
            fmt = spec_to_format(config.audio)
            mix = options.channels == "mix"
            if not mix and fmt.is_pcm:  # raw PCM says its channels (and maybe its size): refused unread
                check_announced(fmt, self.limits, split=True)  # its seconds first, as they always were
                seconds = fmt.pcm_seconds(fmt.total_bytes) if fmt.total_bytes else None
                check_split_windows(fmt.channels, seconds, self.limits.max_seconds)
            with (
                received_audio(_audio_chunks(requests, self.cut_off), fmt, self.limits, mix) as source,
                self._slot(ticket, context),
            ):
                yield from self._run(loaded, source, options, context, call)

    @contextmanager
    def _slot(self, ticket: Ticket, context) -> Iterator[None]:
        """A running slot, waited for in turn; a call still waiting when a shutdown begins is refused at
        once, UNAVAILABLE (its client goes to another server), rather than after the whole grace period
        with grpc's own "Cancelling all calls"."""
        try:
            with ticket.run(lambda: context.is_active() and not self.draining):
                yield
        except Abandoned:
            if self.draining and context.is_active():
                raise _shutting_down() from None
            raise

    def _run(self, loaded: Loaded, source, options, context, call: _Call) -> Iterator:
        segments, info = loaded.threads.call(
            loaded.engine.transcribe,
            source,
            options,
            max_seconds=self.limits.max_seconds,
            # a cancel, a deadline or the end of the grace period frees the slot within a window
            stop=lambda: not context.is_active() or self.cut_off.is_set(),
        )
        try:
            call.audio_seconds = info.duration
            if info.duration > self.limits.max_seconds:
                raise too_long(info.duration, self.limits)
            channels = max(1, info.channels)
            if channels > 1:  # before any window is decoded (the segments are lazy)
                check_split_windows(channels, info.duration, self.limits.max_seconds)
            total = info.duration * channels
            yield pb2.TranscribeResponse(progress=pb2.Progress(seconds_done=0.0, total_seconds=total))
            for segment in loaded.threads.iterate(segments):
                if not context.is_active():
                    return
                done = min(total, segment.channel * info.duration + segment.end)
                call.segments += 1
                call.decoded_seconds = done  # before the yield: a cancel may close the generator there
                yield pb2.TranscribeResponse(segment=segment_to_message(segment))
                yield pb2.TranscribeResponse(progress=pb2.Progress(seconds_done=done, total_seconds=total))
            if self.cut_off.is_set():  # the engine may have stopped early: no summary for part of the audio
                raise _shutting_down()
            if not context.is_active():
                return
            if call.decoded_seconds < total:  # the audio ended in silence, after the last segment
                call.decoded_seconds = total
                yield pb2.TranscribeResponse(progress=pb2.Progress(seconds_done=total, total_seconds=total))
            summary = pb2.Summary(
                duration=info.duration,
                language=info.language,
                language_probability=info.language_probability,
                model=loaded.description.name,
                processing_seconds=call.processing_seconds(),
                segments=call.segments,
                channels=channels,
            )
            yield pb2.TranscribeResponse(summary=summary)
        finally:
            segments.close()
