"""The error codes of the envelope and of failed transcriptions (see shared/DESIGN.md)."""

from enum import StrEnum


class ErrorCode(StrEnum):
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA = "UNSUPPORTED_MEDIA"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    CONCURRENT_UPLOAD_LIMIT = "CONCURRENT_UPLOAD_LIMIT"
    UPLOAD_MISSING = "UPLOAD_MISSING"
    UPLOAD_SIZE_MISMATCH = "UPLOAD_SIZE_MISMATCH"
    AUDIO_DECODE_ERROR = "AUDIO_DECODE_ERROR"
    NO_AUDIO_STREAM = "NO_AUDIO_STREAM"
    AUDIO_TOO_LONG = "AUDIO_TOO_LONG"
    INFERENCE_UNAVAILABLE = "INFERENCE_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL = "INTERNAL"


# The code of an answer known only by its HTTP status: an error the API's own code did not raise (werkzeug's
# 404/405/413, a refused body), and, in the SDK, a page that is not the envelope (a proxy's 413)
CODE_FOR_HTTP: dict[int, ErrorCode] = {
    400: ErrorCode.VALIDATION_ERROR,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}
