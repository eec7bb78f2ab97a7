"""Requests gunicorn refuses before the app sees them answer in the API's JSON envelope, not HTML.

A request line, header or chunked body that gunicorn cannot parse (or that is over its limits) is
answered by the worker itself, with an HTML page (`gunicorn.util.write_error`); gunicorn has no setting
for it. `install()` replaces that writer in the worker process (api.gunicorn_conf calls it from
`post_worker_init`), keeping gunicorn's status and message. Each such answer is counted in
cliptext_api_requests_total with endpoint "gunicorn" and method "other" (the request line may not
even have been read): the app's own hook never sees these requests.
"""

from __future__ import annotations

import logging
import socket

import orjson
from gunicorn import util

from api.http_hooks import API_CSP, SECURITY_HEADERS
from cliptext.errors import ErrorCode

MAX_MESSAGE_CHARS = 200  # gunicorn quotes the offending line, up to its 4 KiB limit

_CODES = {
    403: ErrorCode.FORBIDDEN,
    414: ErrorCode.PAYLOAD_TOO_LARGE,  # request line over --limit-request-line
    431: ErrorCode.PAYLOAD_TOO_LARGE,  # headers over --limit-request-fields / --limit-request-field_size
    500: ErrorCode.INTERNAL,
}

ENDPOINT_LABEL = "gunicorn"  # cliptext_api_requests_total{endpoint} of the answers gunicorn writes


def error_bytes(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP response: the envelope, the API's security headers, and Connection: close
    (gunicorn drops the connection after it, since the rest of the stream cannot be framed)."""
    code = _CODES.get(status, ErrorCode.VALIDATION_ERROR)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    body = orjson.dumps(
        {"error": {"code": code, "message": message or reason, "details": {"status": status}}}
    )
    headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": API_CSP,
        "Cache-Control": "no-store",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error (same arguments); counts the answer."""
    try:
        util.write_nonblock(sock, error_bytes(status_int, reason, mesg))
    finally:
        _count(status_int)


def _count(status: int) -> None:
    from api.metrics import REQUESTS  # imported in the worker, once PROMETHEUS_MULTIPROC_DIR is read

    try:
        REQUESTS.labels(ENDPOINT_LABEL, "other", str(status)).inc()
    except Exception:  # a metric never fails an answer
        logging.getLogger("api.requests").warning("could not count a %d answer of gunicorn", status)


def install() -> None:
    util.write_error = write_json_error
