"""Per-request plumbing: request id, database connection, security headers."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from api.models import db

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex


def _connect_db() -> None:
    db.connect(reuse_if_open=True)


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "application/json":
        response.headers["Cache-Control"] = "no-store"
    return response


def _close_db(_exc: BaseException | None) -> None:
    if not db.is_closed():
        db.close()


def install_request_hooks(app: Flask) -> None:
    """Request id first (error envelopes quote it), then the database connection for the request."""
    app.before_request(_assign_request_id)
    app.before_request(_connect_db)
    app.after_request(_finish)
    app.teardown_appcontext(_close_db)
