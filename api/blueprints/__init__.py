"""One flask-smorest Blueprint per resource; every error response documented with the envelope schema."""

from __future__ import annotations

import http
import json
from collections.abc import Callable
from typing import Any

import flask
import flask_smorest
from marshmallow import missing
from webargs.flaskparser import FlaskParser, is_json_request

from api.errors import ErrorSchema


def _documenting_only(decorate: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Keep what a flask-smorest decorator documents (`_apidoc`), not the wrapper it adds to the call."""

    def decorator(func: Any) -> Any:
        func._apidoc = decorate(func)._apidoc
        return func

    return decorator


class ArgumentsParser(FlaskParser):
    """webargs' parser reading JSON bodies as Flask's get_json does, so every endpoint takes the same.

    webargs decodes the bytes as UTF-8 itself (a BOM or UTF-16 body was a 400 here and accepted by
    POST /v1/transcriptions) and catches only JSONDecodeError: a number of more than 4,300 digits,
    which Python's int() refuses with a ValueError, was a 500.
    """

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return missing
        raw = req.get_data(cache=True)
        if not raw:
            return missing  # no body: webargs reports the required fields
        try:
            return json.loads(raw)  # bytes: UTF-8, -16 or -32, with or without a BOM
        except (ValueError, RecursionError) as error:  # deep nesting is refused before; never a 500
            raise json.JSONDecodeError(str(error), raw.decode(errors="replace") or " ", 0) from error


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose documenting decorators (doc, alt_response) leave the view as is.

    Each of them wraps the view in a function that only calls it on; with `errors()` a GET went through
    eight of them, each with its current_app lookup. The OpenAPI document reads the same `_apidoc`.
    """

    ARGUMENTS_PARSER = ArgumentsParser()

    @staticmethod
    def doc(**kwargs: Any) -> Callable[[Any], Any]:
        return _documenting_only(flask_smorest.Blueprint.doc(**kwargs))

    def alt_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        return _documenting_only(super().alt_response(*args, **kwargs))


# What every authenticated endpoint may answer besides its own errors.
AUTHENTICATED = (401, 429, 503)

_INT = {"schema": {"type": "integer"}}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed per minute for your plan", **_INT},
    "RateLimit-Remaining": {"description": "Requests left in the current window", **_INT},
    "RateLimit-Reset": {"description": "Seconds until the window resets", **_INT},
}
HEADERS_BY_STATUS = {
    429: {**RATE_LIMIT_HEADERS, "Retry-After": {"description": "Seconds to wait", **_INT}},
    405: {"Allow": {"description": "Methods this path accepts", "schema": {"type": "string"}}},
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
}


def errors(blp: Blueprint, *statuses: int, authenticated: bool = True) -> Callable[[Any], Any]:
    """Document error responses (envelope schema) for `statuses` (+ 401/429/503 when authenticated)."""
    codes = sorted(set(statuses) | (set(AUTHENTICATED) if authenticated else set()))

    def decorator(func: Any) -> Any:
        for status in codes:
            func = blp.alt_response(
                status,
                schema=ErrorSchema,
                description=http.HTTPStatus(status).phrase,
                headers=HEADERS_BY_STATUS.get(status),
            )(func)
        return func

    return decorator
