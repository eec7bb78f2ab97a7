"""One flask-smorest Blueprint per resource; every error response documented with the envelope schema."""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any

from flask_smorest import Blueprint

from api.errors import ErrorSchema

# What every authenticated endpoint may answer besides its own errors.
AUTHENTICATED = (401, 429, 503)


def errors(blp: Blueprint, *statuses: int, authenticated: bool = True) -> Callable[[Any], Any]:
    """Document error responses (envelope schema) for `statuses` (+ 401/429/503 when authenticated)."""
    codes = sorted(set(statuses) | (set(AUTHENTICATED) if authenticated else set()))

    def decorator(func: Any) -> Any:
        for status in codes:
            func = blp.alt_response(status, schema=ErrorSchema, description=http.HTTPStatus(status).phrase)(
                func
            )
        return func

    return decorator
