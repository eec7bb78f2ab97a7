"""What a failed transcription attempt means for the job: which ErrorCode, and whether to try again.

Transient failures (no server reachable, servers busy, object storage unreachable) are retried with
backoff; everything the audio itself causes (cannot be decoded, no audio stream, too long) fails at once,
and so does TIMEOUT: the call's deadline is the time the audio's duration allows (jobs.timeouts), and a
retry starts the audio over with the same deadline, so it ran out again, hours later for a long file
(five runs of 8 h each for a 4 h file on an engine slower than the budget).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from rq.timeouts import JobTimeoutException

from api.storage import STORAGE_ERRORS
from cliptext.errors import ErrorCode
from inference.client import InferenceError
from inference.types import EngineError

# codes the server gives that are not the audio's fault, and that a later try may not meet
_TRANSIENT_CODES = {ErrorCode.INFERENCE_UNAVAILABLE, ErrorCode.SERVICE_UNAVAILABLE}
# codes a failed transcription may carry as they are; anything else the server says becomes INTERNAL
_AUDIO_CODES = {
    ErrorCode.AUDIO_DECODE_ERROR,
    ErrorCode.NO_AUDIO_STREAM,
    ErrorCode.AUDIO_TOO_LONG,
    ErrorCode.UNSUPPORTED_MEDIA,
    ErrorCode.VALIDATION_ERROR,
}


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    code: ErrorCode
    message: str
    transient: bool


def _from_status(status: grpc.StatusCode, code: str, message: str) -> Failure:
    if status == grpc.StatusCode.UNAVAILABLE or code == ErrorCode.INFERENCE_UNAVAILABLE:
        return Failure(ErrorCode.INFERENCE_UNAVAILABLE, message, transient=True)
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:  # not retried: see the module docstring
        return Failure(ErrorCode.TIMEOUT, message, transient=False)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if code in {ErrorCode.AUDIO_TOO_LONG, ErrorCode.PAYLOAD_TOO_LARGE}:
            return Failure(ErrorCode.AUDIO_TOO_LONG, message, transient=False)
        # the servers' wait queues are full: come back later
        return Failure(ErrorCode.INFERENCE_UNAVAILABLE, message, transient=True)
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        known = code if code in _AUDIO_CODES else ErrorCode.AUDIO_DECODE_ERROR
        return Failure(ErrorCode(known), message, transient=False)
    if status == grpc.StatusCode.CANCELLED:
        # the server went away mid-call (shutdown); another one can take it
        return Failure(ErrorCode.INFERENCE_UNAVAILABLE, message, transient=True)
    return Failure(ErrorCode.INTERNAL, message, transient=False)


def classify(error: BaseException) -> Failure:
    """The Failure an exception raised while transcribing stands for."""
    if isinstance(error, InferenceError):
        return _from_status(error.status, error.code, error.message)
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return _from_status(error.code(), "", str(error.details() if hasattr(error, "details") else error))
    if isinstance(error, JobTimeoutException):
        return Failure(
            ErrorCode.TIMEOUT, "the transcription took longer than its time limit", transient=False
        )
    if isinstance(error, STORAGE_ERRORS):
        # object storage unreachable or refusing (a missing object is UPLOAD_MISSING before this); the
        # message is stored and shown to the client: the details (host, bucket, key) go to the log only
        log.warning("object storage error: %r", error)
        return Failure(ErrorCode.SERVICE_UNAVAILABLE, "object storage is unavailable", transient=True)
    if isinstance(error, EngineError):
        transient = error.code in _TRANSIENT_CODES
        known = _AUDIO_CODES | _TRANSIENT_CODES | {ErrorCode.TIMEOUT}
        code = error.code if error.code in known else ErrorCode.INTERNAL
        return Failure(ErrorCode(code), error.message, transient=transient)
    return Failure(ErrorCode.INTERNAL, "internal error while transcribing", transient=False)
