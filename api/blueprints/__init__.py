"""One flask-smorest Blueprint per resource; every error response documented with the envelope schema."""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any

from flask_smorest import Blueprint

from api.errors import ErrorSchema

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
