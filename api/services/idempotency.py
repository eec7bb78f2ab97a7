"""Idempotency-Key: the first response to a key is stored in Redis for 24 h and replayed.

Same key + same request → the stored response again (header `Idempotent-Replayed: true`); same key +
different request → 409; a request still running under the key → 409. 5xx answers are not stored, so a
retry after a server failure runs again.

The "in progress" marker lives for the upload slots' lease (CLIPTEXT_UPLOAD_SLOT_LEASE) and is renewed
by the process's lease thread (api.slot_leases) while its request runs: a fixed 300 s let a slower
request's marker expire, and a retry with its key run it a second time (two transcriptions, two
charges), yet the marker of a request whose process died still lapses within the lease.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

from flask import Response, make_response, request

from api.auth import current_principal
from api.errors import ApiError, handle_api_error
from api.state import state
from cliptext.errors import ErrorCode

TTL_SECONDS = 24 * 3600
HEADER = "Idempotency-Key"
_KEEP_HEADERS = ("Content-Type", "Location")


def request_fingerprint() -> str:
    """SHA-256 of method, path and body; multipart files are hashed from their spooled copies."""
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.mimetype == "multipart/form-data":
        # a malformed part can have no name (None): sort on the text so any form fingerprints
        for name in sorted(request.form, key=str):
            digest.update(f"form:{name}={request.form.getlist(name)}\n".encode())
        for name in sorted(request.files, key=str):
            for upload in request.files.getlist(name):
                digest.update(f"file:{name}:{upload.filename}\n".encode())
                while chunk := upload.stream.read(1 << 16):
                    digest.update(chunk)
                upload.stream.seek(0)
    else:
        digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a POST view (outermost, above flask-smorest's decorators)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR, "Idempotency-Key must be 1-255 characters", {"field": HEADER}
            )
        app_state = state()
        org = current_principal().org
        redis_key = app_state.key("idempotency", org.public_id, hashlib.sha256(key.encode()).hexdigest())
        fingerprint = request_fingerprint()
        # the owner token makes the value this request's own: only its holder renews it
        owner = secrets.token_hex(8)
        pending = json.dumps({"state": "pending", "fingerprint": fingerprint, "owner": owner})
        leases = app_state.slot_leases
        if not app_state.redis.set(redis_key, pending, nx=True, px=leases.lease_ms):
            return _replay(app_state.redis.get(redis_key), fingerprint)
        leases.hold_key(app_state.redis, redis_key, pending)
        try:
            return _run_and_record(view, args, kwargs, redis_key, fingerprint)
        finally:
            leases.let_go_key(app_state.redis, redis_key, pending)

    return wrapper


def _run_and_record(
    view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], redis_key: str, fingerprint: str
) -> Response:
    """Run the view under the key's marker; store its answer for replay, or drop the marker when the
    answer is one a retry should not get again (5xx, 429, an exception)."""
    conn = state().redis
    try:
        response: Response = make_response(view(*args, **kwargs))
    except ApiError as error:
        if error.status >= 500:
            conn.delete(redis_key)
            raise
        response = handle_api_error(error)
    except BaseException:
        conn.delete(redis_key)
        raise
    if response.status_code >= 500 or response.status_code == 429:
        conn.delete(redis_key)
        return response
    record = {
        "state": "done",
        "fingerprint": fingerprint,
        "status": response.status_code,
        "body": response.get_data(as_text=True),
        "headers": {h: response.headers[h] for h in _KEEP_HEADERS if h in response.headers},
    }
    conn.set(redis_key, json.dumps(record), ex=TTL_SECONDS)
    return response


# details.reason of the two 409s: a client retries the first (later, same key), never the second
IN_PROGRESS, KEY_REUSED = "in_progress", "key_reused"


def _in_progress() -> ApiError:
    return ApiError(
        ErrorCode.CONFLICT,
        "A request with this Idempotency-Key is in progress",
        {"header": HEADER, "reason": IN_PROGRESS},
        headers={"Retry-After": "1"},
    )


def _replay(raw: bytes | None, fingerprint: str) -> Response:
    if raw is None:  # expired between SET NX and GET: treat as in progress, the client retries
        raise _in_progress()
    record = json.loads(raw)
    if record["fingerprint"] != fingerprint:
        raise ApiError(
            ErrorCode.CONFLICT,
            "This Idempotency-Key was used with a different request",
            {"header": HEADER, "reason": KEY_REUSED},
        )
    if record["state"] != "done":
        raise _in_progress()
    response = Response(record["body"], status=record["status"], headers=record["headers"])
    response.headers["Idempotent-Replayed"] = "true"
    return response
