"""Per-request plumbing: request id, database connection, security headers, unstorable input."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import BadRequest
from werkzeug.wsgi import LimitedStream

from api.auth import is_public_endpoint
from api.errors import ApiError
from api.models import db
from cliptext.errors import ErrorCode

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")

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


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # transcripts, keys and errors are private whatever their format (JSON, text, subtitles)
    response.headers.setdefault("Cache-Control", "no-store")
    if response.mimetype != "text/html":  # HTML (the docs page, the operators' dashboard) sets its own
        response.headers.setdefault("Content-Security-Policy", API_CSP)
    return response


# A JSON escape that may decode to a string no database stores: half a UTF-16 pair ("\ud800"), or NUL
# ("\u0000", which PostgreSQL's text refuses). A pre-filter: the parsed value decides.
_RISKY_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")

# No body of this API nests more than a few levels; Python's JSON parsers recurse once per level and
# fail (RecursionError, a 500) near a thousand.
MAX_JSON_DEPTH = 64
# The largest JSON body of this API is a few kilobytes (a prompt of 1,000 characters at most)
MAX_JSON_BYTES = 1024 * 1024
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def unstorable(text: str) -> str | None:
    """Why no database could store `text` (NUL, or a lone UTF-16 surrogate), or None."""
    if "\x00" in text:
        return "Strings must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Strings must be valid Unicode (a lone surrogate escape was sent)"
    return None


def _unstorable_at(value: Any, path: str = "") -> tuple[str, str] | None:
    """(JSON path, reason) of the first string, key or value, that no database could store."""
    if isinstance(value, str):
        reason = unstorable(value)
        return (path or "$", reason) if reason else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _unstorable_at(key, path) if isinstance(key, str) else None
        found = found or _unstorable_at(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _refuse(field: str, reason: str) -> ApiError:
    return ApiError(ErrorCode.VALIDATION_ERROR, reason, {"field": field})


def as_utf8(raw: bytes) -> bytes:
    """The JSON text in UTF-8, whatever encoding of RFC 8259 (and BOM) it came in: the checks below
    read bytes, and in UTF-16 an escaped quote or a "\\u0000" no longer looks like one."""
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        try:  # strictly: Python's JSON reader takes raw surrogate bytes (surrogatepass), no database does
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequest(f"The JSON body is not valid UTF-8 (at byte {error.start})") from error
        return raw
    try:
        return raw.decode(encoding).encode("utf-8", "surrogatepass")
    except UnicodeError as error:
        raise BadRequest(f"The JSON body is not valid {encoding.upper()}") from error


def _check_json_body() -> None:
    """Bodies no parser or database can take: over MAX_JSON_BYTES (413, read no further), nested past
    MAX_JSON_DEPTH (400, before any parser recurses into it), or holding a string with NUL or half a
    UTF-16 pair (422, not a 500 from the database)."""
    request.max_content_length = min(request.max_content_length or MAX_JSON_BYTES, MAX_JSON_BYTES)
    raw = as_utf8(request.get_data(cache=True))
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    if _RISKY_ESCAPE.search(raw):
        found = _unstorable_at(request.get_json(silent=True))
        if found:
            raise _refuse(*found)


def refuse_unstorable_input() -> None:
    """before_request hook, after authentication and the rate limit (a caller without a key is refused
    before its body is read): ids, query values, JSON and form fields that no database can store.

    SQLite stores NUL, PostgreSQL refuses it with an error that was a 500; both now answer alike: a
    path id holding NUL names nothing (404), any other value is invalid (422). Endpoints that need no
    key (health, docs, the signed upload PUT, whose body is the file) are left to their views.
    """
    nul_in_id = any(isinstance(v, str) and "\x00" in v for v in (request.view_args or {}).values())
    query = request.query_string
    nul_in_query = b"%00" in query or b"\x00" in query  # the only unstorable value a query decodes to
    with_body = request.method in _WITH_BODY
    if not (nul_in_id or nul_in_query or with_body) or is_public_endpoint():
        return  # a GET without NUL (nearly every request) costs two membership tests
    if nul_in_id:
        raise ApiError(ErrorCode.NOT_FOUND, "Not found")
    for name, value in request.args.items(multi=True):
        reason = unstorable(value)
        if reason:
            raise _refuse(name, reason)
    if not with_body:
        return
    if request.is_json:
        _check_json_body()
    elif request.mimetype == "multipart/form-data":
        form = request.form
        if _cut_short():
            # werkzeug's form parser ends quietly where the bytes end: a client gone mid-upload would be
            # answered (and its Idempotency-Key's answer stored) as if it had sent no file
            raise BadRequest("The request body ended before its Content-Length; send it again whole")
        for name, value in form.items(multi=True):
            reason = unstorable(value)
            if reason:
                raise _refuse(name, reason)
        for name, file in request.files.items(multi=True):
            if file.mimetype and unstorable(file.mimetype):  # its name is sanitised, its type stored
                raise _refuse(name, "The part's Content-Type must not contain NUL characters")
    elif _carries_body() and not takes_file():
        # webargs reads only JSON: a form or text body would be answered "missing data for required
        # field", naming fields the caller did send
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA,
            "The body must be JSON (Content-Type: application/json)",
            {"allowed": ["application/json"]},
            status=415,
        )


def _cut_short() -> bool:
    """Whether the body ended before its Content-Length. gunicorn (wsgi.input_terminated) hands over
    what came before the client went, and werkzeug then bounds the stream by the maximum only, so the
    bytes read are counted against the length announced."""
    stream, announced = request.stream, request.content_length
    if announced is None or not isinstance(stream, LimitedStream):
        return False
    stream.exhaust()  # an epilogue the parser left unread is part of the body
    return stream.tell() < announced


def _carries_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def takes_file() -> bool:
    """Views that take a multipart file (`takes_file`) answer other bodies themselves."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(getattr(view, "view_class", None), "takes_file", False)


def _close_db(_exc: BaseException | None) -> None:
    if not db.is_closed():
        db.close()


def install_request_hooks(app: Flask) -> None:
    """Request id first (error envelopes quote it), then the database connection for the request."""
    app.before_request(_assign_request_id)
    app.before_request(_connect_db)
    app.after_request(_finish)
    app.teardown_appcontext(_close_db)
