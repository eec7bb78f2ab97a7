"""Per-request plumbing: request id, database connection, security headers."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

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


# API answers are data, never a page: nothing may load, run or frame them.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_ENDPOINT = "api-docs.openapi_redoc"


def docs_csp(script_url: str) -> str:
    """The ReDoc page: its script from the CDN, inline styles, the spec fetched from here."""
    parts = urlsplit(script_url)
    return (
        f"default-src 'none'; script-src {parts.scheme}://{parts.netloc}; style-src 'unsafe-inline'; "
        "img-src 'self' data: https:; font-src https: data:; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'"
    )


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # transcripts, keys and errors are private whatever their format (JSON, text, subtitles)
    response.headers.setdefault("Cache-Control", "no-store")
    if request.endpoint == DOCS_ENDPOINT:
        response.headers.setdefault(
            "Content-Security-Policy", docs_csp(current_app.config["OPENAPI_REDOC_URL"])
        )
    elif response.mimetype != "text/html":  # other HTML (the operators' dashboard) sets its own
        response.headers.setdefault("Content-Security-Policy", API_CSP)
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
