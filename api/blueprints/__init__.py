"""One flask-smorest Blueprint per resource; every error response documented with the envelope schema."""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any

import flask_smorest

from api.errors import ErrorSchema


def _documenting_only(decorate: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Keep what a flask-smorest decorator documents (`_apidoc`), not the wrapper it adds to the call."""

    def decorator(func: Any) -> Any:
        func._apidoc = decorate(func)._apidoc
        return func

    return decorator


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose documenting decorators (doc, alt_response) leave the view as is.

    Each of them wraps the view in a function that only calls it on; with `errors()` a GET went through
    eight of them, each with its current_app lookup. The OpenAPI document reads the same `_apidoc`.
    """

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
