"""Idempotency-Key: the first response to a key is stored in Redis for 24 h and replayed.

Same key + same request → the stored response again (header `Idempotent-Replayed: true`); same key +
different request → 409; a request still running under the key → 409. 5xx answers are not stored, so a
retry after a server failure runs again.

The "in progress" marker lives for the upload slots' lease (CLIPTEXT_UPLOAD_SLOT_LEASE) and is renewed
by the process's lease thread (api.slot_leases) while its request runs: a fixed 300 s let a slower
request's marker expire, and a retry with its key run it a second time (two transcriptions, two
charges), yet the marker of a request whose process died still lapses within the lease.

A stored answer that created a transcription holds its options (the prompt, the webhook URL), one that
created an upload its signed URL: deleting either replaces that answer with a tombstone (forget_created),
and the key then answers 409 "deleted" (see _deleted for why not a new run).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import redis.exceptions
from flask import Response, make_response, request

from api.auth import current_principal
from api.errors import ApiError, handle_api_error
from api.models import Transcription, Upload, UploadStatus
from api.state import AppState, state
from cliptext.errors import ErrorCode

log = logging.getLogger(__name__)

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
            return _replay(app_state.redis.get(redis_key), fingerprint, redis_key)
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
    _store(record, redis_key, _created_id(response))
    return response


# A created resource's index: the Redis set of the keys of the answers that created it. DELETED, a member
# no key can be (each holds "idempotency:"), says the resource is gone: an answer stored after the delete
# becomes a tombstone at once.
_INDEX, _DELETED = "idempotency-of", "deleted"

# Atomic, so that a delete (another process) lands wholly before or wholly after: either its index
# lists this key, or this answer sees the deletion and stores the tombstone instead.
_STORE = """
if redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 1 then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# Each key indexed that still holds an answer naming the resource (one stored since under the key,
# its first answer expired, is left alone) gets the tombstone for the rest of its 24 h; the index then
# holds only DELETED, for an answer still on its way (_STORE). Returns the number of answers replaced.
_FORGET = """
local replaced = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if key ~= ARGV[1] then
        local raw = redis.call('GET', key)
        local ttl = redis.call('PTTL', key)
        if raw and ttl > 0 then
            local record = cjson.decode(raw)
            if record['state'] == 'done' and record['created'] == ARGV[3] then
                local tombstone = {state = 'deleted', fingerprint = record['fingerprint'], created = ARGV[3]}
                redis.call('SET', key, cjson.encode(tombstone), 'PX', ttl)
                replaced = replaced + 1
            end
        end
    end
end
redis.call('DEL', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return replaced
"""


# what a created id names, by its prefix: the resources a keyed request creates, which can be deleted
_CREATED = {"txn_": ("transcription", "transcription_id"), "upl_": ("upload", "upload_id")}


def _created_in(status: int, body: Any) -> str | None:
    """The id of the transcription or upload an answer (`status`, its decoded JSON `body`) created: a
    2xx whose body's `id` is one of _CREATED's; else None."""
    if not 200 <= status < 300 or not isinstance(body, dict):
        return None
    created = body.get("id")
    return created if isinstance(created, str) and created[:4] in _CREATED else None


def _created_id(response: Response) -> str | None:
    """_created_in of an answer about to be stored."""
    return _created_in(response.status_code, response.get_json(silent=True) if response.is_json else None)


def _tombstone(fingerprint: str, created: str) -> dict[str, str]:
    """What a key keeps once what it created is deleted: no body, so none of the options or URL it held."""
    return {"state": "deleted", "fingerprint": fingerprint, "created": created}


def _store(record: dict[str, Any], redis_key: str, created: str | None) -> None:
    """Store the answer for 24 h; one that created a transcription or an upload is indexed under it."""
    app_state = state()
    if created is None:
        app_state.redis.set(redis_key, json.dumps(record), ex=TTL_SECONDS)
        return
    record["created"] = created
    tombstone = _tombstone(record["fingerprint"], created)
    app_state.redis.eval(
        _STORE,
        2,
        redis_key,
        app_state.key(_INDEX, created),
        json.dumps(record),
        json.dumps(tombstone),
        TTL_SECONDS,
        _DELETED,
    )


def forget_created(app_state: AppState, public_id: str) -> int:
    """Replace every stored answer that created `public_id` (a transcription or an upload, deleted) with
    a tombstone: a transcription's prompt and webhook URL, an upload's signed URL, leave Redis with it,
    and the key answers 409 "deleted". Called once the delete is committed; the number replaced."""
    index = app_state.key(_INDEX, public_id)
    return int(app_state.redis.eval(_FORGET, 1, index, _DELETED, TTL_SECONDS, public_id))


def forget_deleted(app_state: AppState, *public_ids: str) -> None:
    """forget_created for each id a delete removed, once it has committed. Redis failing then does not
    undo the delete: the answers lapse within their 24 h, and the log names them."""
    for public_id in public_ids:
        try:
            forget_created(app_state, public_id)
        except redis.exceptions.RedisError as error:
            log.error("%s deleted, its Idempotency-Key answer kept: %s", public_id, error)


# details.reason of the 409s: a client retries the first (later, same key), never the others
IN_PROGRESS, KEY_REUSED, DELETED = "in_progress", "key_reused", "deleted"


def _in_progress() -> ApiError:
    return ApiError(
        ErrorCode.CONFLICT,
        "A request with this Idempotency-Key is in progress",
        {"header": HEADER, "reason": IN_PROGRESS},
        headers={"Retry-After": "1"},
    )


def _deleted(created: str) -> ApiError:
    """The answer to a key whose transcription (or upload) was deleted: 409 "deleted", no Retry-After.

    Not a new run: a key promises the request is carried out at most once, and a retry that arrives after
    the delete is a late copy of a request that already succeeded (the client deleted what it made). Run
    again, it would charge a second transcription, and store again audio the customer chose to erase (a
    multipart create carries the file). Not the old 202 either: it named an id that answers 404. Nor 410,
    which no envelope code names: a 409 is what clients already treat as final for a key (key_reused),
    and the SDK retries a 409 only with reason in_progress.
    """
    what, field = _CREATED[created[:4]]
    return ApiError(
        ErrorCode.CONFLICT,
        f"The {what} this Idempotency-Key created ({created}) was deleted; "
        "send a new Idempotency-Key to create another",
        {"header": HEADER, "reason": DELETED, field: created},
    )


def _created_by(record: dict[str, Any]) -> str | None:
    """_created_in of a stored answer, read from its body (answers stored by a release before the
    tombstones have no "created" field, and no index for a delete to find them)."""
    if record["state"] != "done":
        return None
    try:
        body = json.loads(record["body"])
    except ValueError:
        return None
    return _created_in(record["status"], body)


def _still_there(public_id: str) -> bool:
    if public_id.startswith("txn_"):
        return Transcription.select().where(Transcription.public_id == public_id).exists()
    return (
        Upload.select()
        .where((Upload.public_id == public_id) & (Upload.status != UploadStatus.CANCELED))
        .exists()
    )


def _replay(raw: bytes | None, fingerprint: str, redis_key: str) -> Response:
    """The stored answer again; never one naming what was deleted since. A delete tombstones the answers
    it finds (forget_created), but not those stored before a rolling upgrade, nor any while Redis failed
    it: so a replay checks the row (one indexed read) and tombstones the answer itself."""
    if raw is None:  # expired between SET NX and GET: treat as in progress, the client retries
        raise _in_progress()
    record = json.loads(raw)
    if record["fingerprint"] != fingerprint:
        raise ApiError(
            ErrorCode.CONFLICT,
            "This Idempotency-Key was used with a different request",
            {"header": HEADER, "reason": KEY_REUSED},
        )
    created = _created_by(record)
    if created is not None and not _still_there(created):
        state().redis.set(redis_key, json.dumps(_tombstone(fingerprint, created)), keepttl=True)
        raise _deleted(created)
    if record["state"] == "deleted":
        raise _deleted(record["created"])
    if record["state"] != "done":
        raise _in_progress()
    response = Response(record["body"], status=record["status"], headers=record["headers"])
    response.headers["Idempotent-Replayed"] = "true"
    return response
