"""Per-request plumbing: request id, database connection, security headers."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import BadRequest

from api.errors import ApiError
from api.models import db
from cliptext.errors import ErrorCode

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


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")

# No body of this API nests more than a few levels; Python's JSON parsers recurse once per level and
# fail (RecursionError, a 500) near a thousand.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The JSON path of the first string holding a lone UTF-16 surrogate, if any."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "$"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = _lone_surrogate_at(key, path) if isinstance(key, str) else None
        where = where or _lone_surrogate_at(item, f"{path}.{key}" if path else str(key))
        if where:
            return where
    return None


def _refuse_unstorable_json() -> None:
    """JSON bodies no parser or database can take: nested past MAX_JSON_DEPTH (400, before any parser
    recurses into it), or a string holding half a UTF-16 pair ("\\ud800"), which no database can store
    (422, not 500)."""
    if not request.is_json:
        return
    raw = request.get_data(cache=True)
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    if not _ESCAPED_SURROGATE.search(raw):
        return
    where = _lone_surrogate_at(request.get_json(silent=True))
    if where:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "Strings must be valid Unicode (a lone surrogate escape was sent)",
            {"field": where},
        )


def _close_db(_exc: BaseException | None) -> None:
    if not db.is_closed():
        db.close()


def install_request_hooks(app: Flask) -> None:
    """Request id first (error envelopes quote it), then the database connection for the request."""
    app.before_request(_assign_request_id)
    app.before_request(_connect_db)
    app.before_request(_refuse_unstorable_json)
    app.after_request(_finish)
    app.teardown_appcontext(_close_db)
