"""The one error envelope of the API, and the one place exceptions become HTTP responses.

`ErrorSchema` both documents every error response in OpenAPI (flask-smorest's ERROR_SCHEMA) and dumps
every error payload, so the two cannot drift: {"error": {"code", "message", "details"}}.
"""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

import gunicorn.http.errors
import marshmallow as ma
import peewee as pw
import redis.exceptions
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from api.storage import STORAGE_ERRORS
from cliptext.errors import CODE_FOR_HTTP, ErrorCode

log = logging.getLogger(__name__)


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf([c.value for c in ErrorCode]),
        metadata={"description": "Machine-readable error code", "enum": [c.value for c in ErrorCode]},
    )
    message = ma.fields.String(required=True, metadata={"description": "Human-readable explanation"})
    details = ma.fields.Dict(
        load_default=dict, dump_default=dict, metadata={"description": "Structured context (fields…)"}
    )


class ErrorSchema(ma.Schema):
    """{"error": {"code", "message", "details"}}"""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


DEFAULT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA: 422,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CONCURRENT_UPLOAD_LIMIT: 429,
    ErrorCode.UPLOAD_MISSING: 422,
    ErrorCode.UPLOAD_SIZE_MISMATCH: 422,
    ErrorCode.AUDIO_DECODE_ERROR: 422,
    ErrorCode.NO_AUDIO_STREAM: 422,
    ErrorCode.AUDIO_TOO_LONG: 422,
    ErrorCode.INFERENCE_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class ApiError(Exception):
    """A domain error: carries its ErrorCode; the HTTP status follows from it unless given."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = status or DEFAULT_STATUS[code]
        self.headers = headers or {}


class NotFound(ApiError):
    def __init__(self, what: str = "Resource") -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"{what} not found")


_SCHEMA = ErrorSchema()


def error_response(
    code: ErrorCode,
    message: str,
    details: dict[str, Any] | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Dump the envelope with ErrorSchema and wrap it in a JSON response."""
    payload = _SCHEMA.dump({"error": {"code": code.value, "message": message, "details": details or {}}})
    response = jsonify(payload)
    response.status_code = status or DEFAULT_STATUS[code]
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation_details(data: dict[str, Any]) -> dict[str, Any]:
    """webargs puts marshmallow errors under their location ({"json": {...}}); flatten to fields."""
    messages = data.get("messages") or data.get("errors") or {}
    fields: dict[str, Any] = {}
    for location_errors in messages.values():
        if isinstance(location_errors, dict):
            fields.update(location_errors)
    return {"fields": fields} if fields else {}


def _parse_error(error: HTTPException) -> ValueError | None:
    """The JSON reader's own error behind a 400: webargs attaches it as `exc` (wrapping the reader's
    error as its cause), Flask's get_json raises a bare BadRequest from one raised while handling it."""
    found, link, seen = None, error, 0
    while link is not None and seen < 8:
        if isinstance(link, ValueError):
            found = link  # the innermost one: the reader's, with its real position
        link, seen = getattr(link, "exc", None) or link.__cause__ or link.__context__, seen + 1
    return found


def invalid_json_message(error: HTTPException) -> str | None:
    """What is wrong with a JSON body that did not parse, instead of Werkzeug's stock "The browser (or
    proxy) sent a request that this server could not understand." (None for any other 400)."""
    if error.description != BadRequest.description or not request.is_json:
        return None  # a 400 that says why already (not UTF-8, nested too deep) keeps its message
    parse_error = _parse_error(error)
    if isinstance(parse_error, json.JSONDecodeError):
        where = f"line {parse_error.lineno}, column {parse_error.colno}"
        return f"The request body is not valid JSON: {parse_error.msg} ({where})"
    if parse_error is not None:  # valid JSON Python refuses: an integer of more than 4,300 digits
        return f"The request body could not be read as JSON: {parse_error}"
    return None


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = CODE_FOR_HTTP.get(status, ErrorCode.INTERNAL)
    data = getattr(error, "data", None) or {}
    details: dict[str, Any] = {}
    message = error.description or error.name
    headers: dict[str, str] = dict(data.get("headers") or {})
    if status == 422 and data:
        details = _validation_details(data)
        message = "The request is invalid; see details.fields"
    elif status == 405:
        headers.update({k: v for k, v in error.get_headers() if k.lower() == "allow"})
        details = {"allowed": sorted(getattr(error, "valid_methods", None) or [])}
        message = "Method not allowed"
    elif status == 400:
        message = invalid_json_message(error) or message
    elif status == 404:
        message = "Not found"
    elif status >= 500:
        return handle_unexpected(error)
    return error_response(code, message, details, status, headers)


def handle_api_error(error: ApiError) -> Response:
    return error_response(error.code, error.message, error.details, error.status, error.headers)


# the Retry-After of every 503: a backing service down, an upload reservation busy
RETRY_UNAVAILABLE = {"Retry-After": "5"}


def handle_service_unavailable(error: Exception) -> Response:
    log.error("backing service unavailable (request %s): %r", g.get("request_id"), error)
    return error_response(
        ErrorCode.SERVICE_UNAVAILABLE,
        "A backing service is unavailable; retry later",
        {"request_id": g.get("request_id")},
        headers=RETRY_UNAVAILABLE,
    )


def handle_unexpected(error: Exception) -> Response:
    """500 with the request id to quote to support; the stack trace goes to the log, never the client."""
    original = getattr(error, "original_exception", None) or error
    log.error("unhandled error (request %s)", g.get("request_id"), exc_info=original)
    return error_response(
        ErrorCode.INTERNAL,
        f"Internal error; quote request id {g.get('request_id')} to support",
        {"request_id": g.get("request_id")},
    )


# a database, Redis or object storage that cannot answer: 503 with Retry-After, not 500
BACKING_SERVICE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    pw.OperationalError,
    pw.InterfaceError,
    *STORAGE_ERRORS,
)


# a local disk that cannot take the bytes (full, over quota, past a file size limit, read-only) is storage
# that cannot answer, as S3 down is: 503 with Retry-After. Raised from LocalStorage and from werkzeug's
# spooling of a multipart body alike, hence app-wide. Any other OSError is a bug: still a 500.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def handle_os_error(error: OSError) -> Response:
    if error.errno in STORAGE_FULL_ERRNOS:
        log.error("local storage cannot take the bytes (request %s): %r", g.get("request_id"), error)
        return error_response(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Storage cannot take the upload now; retry later",
            {"request_id": g.get("request_id")},
            headers=RETRY_UNAVAILABLE,
        )
    return handle_unexpected(error)


# gunicorn raises these from the request body's stream (a bad chunk size, a missing chunk terminator, a
# connection closed before the announced length) wherever the app reads it: the client's fault, 400
UNREADABLE_BODY_ERRORS = (gunicorn.http.errors.ParseException, gunicorn.http.errors.NoMoreData)


def handle_unreadable_body(error: Exception) -> Response:
    log.info("unreadable request body (request %s): %r", g.get("request_id"), error)
    return error_response(
        ErrorCode.VALIDATION_ERROR,
        "The request body could not be read: malformed chunked encoding, or fewer bytes than announced",
        status=400,
    )


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    for error in UNREADABLE_BODY_ERRORS:
        app.register_error_handler(error, handle_unreadable_body)
    app.register_error_handler(HTTPException, handle_http_exception)
    for error in BACKING_SERVICE_ERRORS:
        app.register_error_handler(error, handle_service_unavailable)
    app.register_error_handler(OSError, handle_os_error)
    app.register_error_handler(Exception, handle_unexpected)
