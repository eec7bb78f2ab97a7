"""OpenAI's error shape for the OpenAI-compatible endpoints only: {"error": {message, type, param, code}}.

The app's own handlers (api.errors, the rate limiter) still decide status, headers and message; the
blueprint-level handlers installed here run them and rewrite the Cliptext envelope they produce, so
both APIs answer every error the same way, each in its own shape. Errors from hooks that run before
the view (API key, rate limit) are included: Flask picks handlers by the blueprint of the URL.
"""

from __future__ import annotations

from typing import Any

import peewee as pw
import redis.exceptions
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from api.errors import ApiError, handle_http_exception, handle_unexpected

_TYPES = {
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}

HANDLED = (
    ApiError,
    HTTPException,
    RateLimitExceeded,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    pw.OperationalError,
    pw.InterfaceError,
    Exception,
)


def _param(details: dict[str, Any]) -> str | None:
    if isinstance(details.get("field"), str):
        return details["field"]
    fields = details.get("fields")
    if isinstance(fields, dict) and fields:
        return str(next(iter(fields)))
    return None


def openai_error(
    status: int, message: str, code: str | None, param: str | None = None, **extra: str
) -> Response:
    """OpenAI's error body; `extra` adds fields of ours beside its four (clients ignore them)."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"message": message, "type": kind, "param": param, "code": code, **extra}
    response = jsonify({"error": body})
    response.status_code = status
    return response


def to_openai(response: Response) -> Response:
    """Rewrite a Cliptext error envelope response into OpenAI's shape (status and headers kept)."""
    envelope = (response.get_json(silent=True) or {}).get("error") or {}
    details = envelope.get("details") or {}
    status = 400 if response.status_code == 422 else response.status_code  # OpenAI says 400 for bad input
    code = _CODES.get(status) or str(envelope.get("code", "")).lower() or None
    converted = openai_error(status, envelope.get("message") or "error", code, _param(details))
    for name, value in response.headers.items():
        if name.lower() not in {"content-type", "content-length"}:
            converted.headers[name] = value
    return converted


def _app_handler(error: Exception):
    """The handler the app itself registered for this exception (by class, then by HTTP code)."""
    code = error.code if isinstance(error, HTTPException) else None
    spec = current_app.error_handler_spec[None]
    for cls in type(error).__mro__:
        for key in (code, None):
            handler = spec.get(key, {}).get(cls)
            if handler is not None:
                return handler
    return handle_unexpected


def _handle(error: Exception) -> Response:
    result = current_app.make_response(_app_handler(error)(error))
    return to_openai(result) if result.mimetype == "application/json" else result


# An unknown path or method under these has no blueprint (routing found no view): the app answers it,
# in OpenAI's shape here too, as an OpenAI client expects from GET /v1/audio/transcriptions.
OPENAI_PATHS = ("/v1/audio/", "/v1/models")


def _install_routing_errors(app: Flask, paths: tuple[str, ...]) -> None:
    def routing_error(error: HTTPException) -> Response:
        response = handle_http_exception(error)
        return to_openai(response) if request.path.startswith(paths) else response

    for cls in (NotFound, MethodNotAllowed):
        app.register_error_handler(cls, routing_error)


def install_openai_errors(blueprint: Blueprint, paths: tuple[str, ...] = OPENAI_PATHS) -> None:
    for cls in HANDLED:
        blueprint.register_error_handler(cls, _handle)
    blueprint.record_once(lambda setup: _install_routing_errors(setup.app, paths))
