"""Uploads: presigned URLs and multipart files under the plan's concurrent-upload cap, the signed local
PUT, completion checks, and the purge of what nothing will use."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import peewee as pw
import redis.exceptions
from itsdangerous import BadSignature, SignatureExpired
from redis.lock import Lock

from api.db import erase_deleted_rows_from_wal, hold_until_commit, locked, write_transaction
from api.errors import RETRY_UNAVAILABLE, ApiError, NotFound
from api.media import check_content_type, check_format, verify_media
from api.models import Organization, Transcription, Upload, UploadStatus, utcnow
from api.services.idempotency import forget_deleted
from api.services.plans import limits_for
from api.state import AppState
from api.storage import Busy, TooLarge
from cliptext.errors import ErrorCode

URL_TTL = dt.timedelta(hours=1)
# how long a completed upload that no transcription uses is kept (presigned and completed, never
# transcribed; a multipart upload whose request died before its transcription was created)
UNUSED_RETENTION = dt.timedelta(hours=24)
LOCK_TIMEOUT_S = 10
# PostgreSQL advisory lock namespace of the per-organization upload cap ("upl\0"), keyed by the org's id
_CAP_LOCK_NAMESPACE = 0x75706C00
_SIGNER_SALT = "upload-content-put"
_RETRY_BUSY = {"Retry-After": "5"}  # a PUT or complete of the same upload still running
# what a canceled upload's row keeps in place of the customer's file name until the purge removes it
DELETED_FILENAME = "deleted"


@dataclass(frozen=True)
class PresignedUpload:
    upload: Upload
    url: str
    headers: dict[str, str]


def sanitize_filename(filename: str) -> str:
    """A display name only (never a path): last path part, printable, at most 255 characters."""
    name = unicodedata.normalize("NFKC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    # control and format characters (NUL, newlines, bidi overrides that disguise the extension) go
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs"})
    name = name.strip().strip(".") or "upload"
    return name[-255:]


def storage_key(org: Organization, upload_public_id: str) -> str:
    return f"uploads/{org.public_id}/{upload_public_id}"


def _in_flight(org: Organization):
    return Upload.select().where(
        (Upload.organization == org)
        & Upload.status.in_([UploadStatus.PENDING, UploadStatus.UPLOADED])
        & (Upload.expires_at > utcnow())
    )


def _reserve(state: AppState, org: Organization, upload: Upload, ttl: dt.timedelta = URL_TTL) -> Upload:
    """Insert `upload` (pending or uploaded: it holds a slot) if the plan's concurrent-upload cap allows.

    The count-then-insert runs under a per-organization Redis lock, so concurrent calls from any number
    of API processes cannot exceed the cap; inside the transaction the database serializes them too
    (PostgreSQL's advisory lock, SQLite's write lock), for an insert that waits past the Redis lock's
    expiry (a table locked by a migration, a stalled server) while another request counts.
    """
    cap = limits_for(org).concurrent_uploads
    lock = state.redis.lock(state.key("lock", "uploads", org.public_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire(blocking_timeout=LOCK_TIMEOUT_S):
        busy = "Upload reservation is busy; retry"
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, busy, headers=dict(RETRY_UNAVAILABLE))
    try:
        with write_transaction():
            hold_until_commit(_CAP_LOCK_NAMESPACE, org.id)
            upload.expires_at = utcnow() + ttl
            active, oldest = (
                _in_flight(org).select(pw.fn.COUNT(Upload.id), pw.fn.MIN(Upload.expires_at)).tuples().get()
            )
            if active >= cap:
                raise _cap_reached(org, cap, active, oldest)
            upload.save(force_insert=True)
    finally:
        _let_go(lock)
    return upload


def _let_go(lock: Lock) -> None:
    """Release the reservation's Redis lock. One that expired meanwhile, or a Redis that does not answer
    now, changes nothing: the reservation is committed (or refused) already, and the lock expires by
    itself. Raising had answered a 500 for a reservation made, its slot held until it expired."""
    with contextlib.suppress(
        redis.exceptions.LockError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError
    ):
        lock.release()


# Retry-After of the cap's 429 at most: a slot frees when an upload is stored or completed, usually long
# before its reservation expires (an hour), and OpenAI's SDKs give up at once past 120 s
MAX_CAP_RETRY_AFTER = 60


def _cap_reached(org: Organization, cap: int, active: int, oldest: dt.datetime | None) -> ApiError:
    """429 whose Retry-After is the time until the oldest reservation expires, its slot free then at the
    latest, but at most MAX_CAP_RETRY_AFTER: sooner when that upload is completed or refused, which no
    one can foretell."""
    wait = math.ceil((oldest - utcnow()).total_seconds()) if oldest is not None else 1
    wait = min(wait, MAX_CAP_RETRY_AFTER)
    return ApiError(
        ErrorCode.CONCURRENT_UPLOAD_LIMIT,
        f"At most {cap} concurrent upload(s) on the {org.plan} plan",
        {"limit": cap, "in_progress": active, "plan": org.plan},
        headers={"Retry-After": str(max(1, wait))},
    )


def presign(
    state: AppState, org: Organization, filename: str, content_type: str, size: int, base_url: str
) -> PresignedUpload:
    """Reserve an upload slot and return where to PUT the bytes."""
    check_format(filename)
    check_content_type(content_type)
    if size > state.settings.max_upload_bytes:
        raise ApiError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            "Declared size exceeds the maximum upload size",
            {"field": "size", "max_bytes": state.settings.max_upload_bytes},
        )
    upload = Upload(
        organization=org, filename=sanitize_filename(filename), content_type=content_type, declared_size=size
    )
    upload.storage_key = storage_key(org, upload.public_id)
    _reserve(state, org, upload)
    expires_in = int(URL_TTL.total_seconds())
    if state.storage.is_local:
        token = state.signer.dumps({"u": upload.public_id}, salt=_SIGNER_SALT)
        url = f"{base_url.rstrip('/')}/v1/uploads/{upload.public_id}/content?signature={token}"
        headers = {"Content-Type": content_type}
    else:
        try:
            url, headers = state.storage.presigned_put(upload.storage_key, content_type, size, expires_in)
        except Exception:  # no URL, no reservation: a retry must not find its own slot taken
            upload.delete_instance()
            raise
    return PresignedUpload(upload=upload, url=url, headers=headers)


def receive_content(
    state: AppState, upload_public_id: str, signature: str, stream: BinaryIO, content_length: int | None
) -> Upload:
    """The local stand-in for S3's presigned PUT: one PUT of at most the declared size goes through.

    A PUT that failed after it claimed the URL (a 503, its process killed) may be sent again: the claim,
    the bytes and their record happen under the upload's write lock, which a dead request no longer holds.
    """
    try:
        payload = state.signer.loads(signature, salt=_SIGNER_SALT, max_age=int(URL_TTL.total_seconds()))
    except SignatureExpired as error:
        raise ApiError(ErrorCode.FORBIDDEN, "The upload URL has expired") from error
    except BadSignature as error:
        raise ApiError(ErrorCode.FORBIDDEN, "The upload URL signature is invalid") from error
    if not isinstance(payload, dict) or payload.get("u") != upload_public_id:
        raise ApiError(ErrorCode.FORBIDDEN, "The upload URL signature is invalid")
    upload = Upload.get_or_none(Upload.public_id == upload_public_id)
    if upload is None or upload.status == UploadStatus.CANCELED:
        raise NotFound("Upload")
    limit = min(upload.declared_size, state.settings.max_upload_bytes)
    if content_length is not None and content_length > limit:
        raise ApiError(
            ErrorCode.PAYLOAD_TOO_LARGE, "Body is larger than the declared size", {"max_bytes": limit}
        )
    busy = "Another request is sending or checking this upload's bytes; retry once it has answered"
    with _holding(state, upload, busy):
        _claim(upload)
        try:
            received = state.storage.write_stream(upload.storage_key, stream, limit)
            if content_length is not None and received < content_length:
                # the client went away mid-body: taken as the whole upload, the URL counted as used and
                # the resend of the client's retry was refused, then complete failed on the size
                state.storage.delete(upload.storage_key)
                raise ApiError(
                    ErrorCode.VALIDATION_ERROR,
                    "The body ended before its Content-Length; send it again",
                    {"received": received, "content_length": content_length},
                )
            return _record(state, upload, received)
        except TooLarge as error:
            _release(upload)
            raise ApiError(
                ErrorCode.PAYLOAD_TOO_LARGE, "Body is larger than the declared size", {"max_bytes": limit}
            ) from error
        except BaseException:
            _release(upload)
            raise


@contextlib.contextmanager
def _holding(state: AppState, upload: Upload, busy: str) -> Iterator[None]:
    """The upload's write lock for the block: 409 with Retry-After while another request holds it."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(state.storage.exclusive(upload.storage_key))
        except Busy as error:
            details = {"upload_id": upload.public_id}
            raise ApiError(ErrorCode.CONFLICT, busy, details, headers=dict(_RETRY_BUSY)) from error
        yield


def _claim(upload: Upload) -> None:
    """Take the URL's one PUT: pending, or claimed by a PUT that never recorded its bytes (it failed, or
    its process died). Under the write lock, so no such PUT is still going."""
    unrecorded = (Upload.status == UploadStatus.UPLOADED) & Upload.received_size.is_null()
    claimed = (
        Upload.update(status=UploadStatus.UPLOADED, received_size=None)
        .where((Upload.id == upload.id) & ((Upload.status == UploadStatus.PENDING) | unrecorded))
        .execute()
    )
    if not claimed:
        raise ApiError(ErrorCode.CONFLICT, "This upload URL has already been used")


def _release(upload: Upload) -> None:
    """Give the URL back after a failed PUT. Best effort: with the database down the claim stays, and
    the next PUT takes it over all the same (_claim)."""
    with contextlib.suppress(Exception):
        Upload.update(status=UploadStatus.PENDING, received_size=None).where(
            (Upload.id == upload.id) & (Upload.status == UploadStatus.UPLOADED)
        ).execute()


def _record(state: AppState, upload: Upload, received: int) -> Upload:
    """The bytes are in place: note their size. A row gone meanwhile (purged as it expired) will never
    point at them, so they go too; one completed meanwhile (complete checked these very bytes) is this
    PUT's success, and its bytes stay."""
    recorded = (
        Upload.update(received_size=received)
        .where((Upload.id == upload.id) & (Upload.status == UploadStatus.UPLOADED))
        .execute()
    )
    if recorded:
        upload.status, upload.received_size = UploadStatus.UPLOADED, received
        return upload
    current = Upload.get_or_none(Upload.id == upload.id)
    if current is None:
        state.storage.delete(upload.storage_key)
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "The upload expired while its bytes were sent; start a new upload",
            {"upload_id": upload.public_id},
        )
    if current.status == UploadStatus.COMPLETED:
        return current
    raise ApiError(
        ErrorCode.CONFLICT,
        "The upload changed while its bytes were sent; check it with POST /v1/uploads/complete",
        {"upload_id": upload.public_id, "status": current.status},
    )


def get_upload(org: Organization, upload_public_id: str) -> Upload:
    """One of `org`'s uploads; a deleted (canceled) one is not found."""
    upload = Upload.get_or_none(
        (Upload.public_id == upload_public_id)
        & (Upload.organization == org)
        & (Upload.status != UploadStatus.CANCELED)
    )
    if upload is None:
        raise NotFound("Upload")
    return upload


def cancel(state: AppState, org: Organization, upload_public_id: str) -> None:
    """Delete an upload no transcription uses: its bytes go now and its concurrent-upload slot is free at
    once (an abandoned presign held it until its URL expired: an hour of 429s on the Free plan).

    Under the upload's write lock (409 while a PUT or complete of it runs; S3's holds nothing, and a
    complete running meanwhile answers 404) and its row lock (a transcription created from it meanwhile
    is seen). The row stays, canceled, until the URL expires.
    """
    upload = get_upload(org, upload_public_id)
    busy = "This upload's bytes are being received or checked; retry once that request has answered"
    with _holding(state, upload, busy), write_transaction():
        current = locked(Upload.select().where(Upload.id == upload.id)).first()
        if current is None or current.status == UploadStatus.CANCELED:
            raise NotFound("Upload")
        user = current.transcriptions.select(Transcription.public_id).first()
        if user is not None:
            raise ApiError(
                ErrorCode.CONFLICT,
                "A transcription uses this upload; delete the transcription (its upload goes with it)",
                {"upload_id": current.public_id, "transcription_id": user.public_id},
            )
        _cancel(state, current)
    erase_deleted_rows_from_wal()
    forget_deleted(state, upload_public_id)  # a keyed presign's answer replayed its signed URL


def complete(state: AppState, org: Organization, upload_public_id: str) -> Upload:
    """Check the object exists, has the declared size and really is audio/video; then it is usable.

    The checks hold the upload's write lock: no PUT can put other bytes in place of those checked.
    """
    upload = get_upload(org, upload_public_id)
    if upload.status == UploadStatus.COMPLETED:
        return upload
    if upload.expires_at < utcnow():  # the purge may remove it at any moment: its bytes too
        raise _expired_meanwhile(upload)
    busy = "This upload's bytes are still being received; call complete once its PUT has answered"
    with _holding(state, upload, busy):
        return _check_and_complete(state, upload)


def _check_and_complete(state: AppState, upload: Upload) -> Upload:
    """complete's checks and its record, under the upload's write lock."""
    size = state.storage.size(upload.storage_key)
    if size is None:
        raise ApiError(
            ErrorCode.UPLOAD_MISSING,
            "No bytes were uploaded for this upload",
            {"upload_id": upload.public_id},
        )
    try:
        if size != upload.declared_size:
            raise ApiError(
                ErrorCode.UPLOAD_SIZE_MISMATCH,
                "The uploaded size differs from the declared size",
                {"declared": upload.declared_size, "received": size},
            )
        with state.storage.local_copy(upload.storage_key) as path:
            if not path.exists():  # gone since it was sized: missing, not unreadable media
                raise _gone_meanwhile(upload)
            try:
                duration = verify_media(path, state.settings.max_audio_seconds)
            except ApiError as refused:
                if not path.exists():  # removed while it was probed (the purge, at its expiry)
                    raise _gone_meanwhile(upload) from refused
                raise
    except ApiError:
        # a refused upload can never become usable: free its slot under the cap (and, on S3, purge what
        # its still valid URL may yet store)
        retire_upload(state, upload)
        raise
    now = utcnow()
    # not over a delete: S3's write lock holds nothing, so a DELETE may cancel it (its object removed)
    # during the checks, and `completed` written over that had answered 200 for audio already gone
    Upload.update(
        status=UploadStatus.COMPLETED, received_size=size, duration=duration, completed_at=now
    ).where((Upload.id == upload.id) & (Upload.status != UploadStatus.CANCELED)).execute()
    current = Upload.get_or_none(Upload.id == upload.id)
    if current is None:  # purged as it expired during the checks
        raise _expired_meanwhile(upload)
    if current.status == UploadStatus.CANCELED:
        raise NotFound("Upload")
    return current


def _gone_meanwhile(upload: Upload) -> ApiError:
    """Its bytes vanished during complete's checks: purged as it expired (the purge may not have
    committed the row's removal yet, so the expiry decides), or removed from storage by someone else."""
    if upload.expires_at < utcnow() or not Upload.select().where(Upload.id == upload.id).exists():
        return _expired_meanwhile(upload)
    return ApiError(
        ErrorCode.UPLOAD_MISSING,
        "The uploaded bytes are no longer in storage; start a new upload",
        {"upload_id": upload.public_id},
    )


def _expired_meanwhile(upload: Upload) -> ApiError:
    return ApiError(
        ErrorCode.NOT_FOUND,
        "The upload expired before it was completed; start a new upload",
        {"upload_id": upload.public_id},
    )


def reserve_file_slot(state: AppState, org: Organization) -> Upload:
    """Hold a concurrent-upload slot for a multipart upload before its body is read (429 at the cap).

    The slot is a row counted as a presigned upload's is, filled in by create_from_file; whatever becomes
    of the request, release_file_slot frees it. It is reserved for the slot lease only, which the
    process renews while the request runs (api.slot_leases): a dead process's slot frees itself within it.
    """
    upload = Upload(
        organization=org,
        filename="upload",
        content_type="application/octet-stream",
        declared_size=0,
        status=UploadStatus.UPLOADED,  # its bytes come in this request; no URL is ever signed for it
    )
    upload.storage_key = storage_key(org, upload.public_id)
    return _reserve(state, org, upload, state.slot_leases.lease)


def create_from_file(
    state: AppState, slot: Upload, filename: str, content_type: str, stream: BinaryIO
) -> Upload:
    """A multipart upload in its reserved slot: stored, probed and completed in one step (which frees the
    slot); refused, its bytes go at once and its row with release_file_slot."""
    check_format(filename, field="file")
    try:
        size = state.storage.write_stream(slot.storage_key, stream, state.settings.max_upload_bytes)
    except TooLarge as error:
        raise ApiError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            "File exceeds the maximum upload size",
            {"max_bytes": state.settings.max_upload_bytes},
        ) from error
    try:
        with state.storage.local_copy(slot.storage_key) as path:
            duration = verify_media(path, state.settings.max_audio_seconds)
        values = {
            "filename": sanitize_filename(filename),
            "content_type": _stored_type(content_type),
            "declared_size": size,
            "received_size": size,
            "duration": duration,
            "status": UploadStatus.COMPLETED,
            "completed_at": utcnow(),
            "expires_at": utcnow(),  # no URL was signed for it: nothing can arrive for it later
        }
        stored = (
            Upload.update(**values)
            .where((Upload.id == slot.id) & (Upload.status == UploadStatus.UPLOADED))
            .execute()
        )
        if not stored:  # purged as its reservation expired while the body came in
            raise _expired_meanwhile(slot)
    except BaseException:
        # not media, or the row could not be written (database down): no completed row would ever point
        # at these bytes
        with contextlib.suppress(Exception):
            state.storage.delete(slot.storage_key)
        raise
    for name, value in values.items():
        setattr(slot, name, value)
    return slot


def _stored_type(part_type: str | None) -> str:
    """The multipart part's Content-Type as stored: metadata nothing checks (the bytes are probed), so
    one empty or longer than its column (PostgreSQL refuses those; SQLite kept them) is stored as
    unknown bytes."""
    if not part_type or len(part_type) > Upload.content_type.max_length:
        return "application/octet-stream"
    return part_type


def release_file_slot(state: AppState, slot: Upload) -> None:
    """The end of a multipart request: a slot not completed (refused, failed, the client gone) goes, with
    any bytes it received; a completed one is no longer counted and stays for its transcription."""
    not_completed = (Upload.id == slot.id) & (Upload.status != UploadStatus.COMPLETED)
    if Upload.select().where(not_completed).exists():
        state.storage.delete(slot.storage_key)  # the bytes first: a row left behind is purged as it expires
        Upload.delete().where(not_completed).execute()


@contextlib.contextmanager
def removed_unless_transcribed(state: AppState, upload: Upload) -> Iterator[None]:
    """Around creating a multipart upload's transcription: should that fail (refused, enqueue failed), no
    one ever learns the upload's id, so it goes now (the purge would keep it UNUSED_RETENTION)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception), write_transaction():
            current = locked(Upload.select().where(Upload.id == upload.id)).first()
            if current is not None and not current.transcriptions.exists():
                delete_upload(state, current)
        raise


def delete_upload(state: AppState, upload: Upload) -> None:
    """Remove the bytes and the row for good (once committed, api.db.erase_deleted_rows_from_wal)."""
    state.storage.delete(upload.storage_key)
    upload.delete_instance()


def retire_upload(state: AppState, upload: Upload) -> None:
    """Remove an upload refused or whose transcription is deleted. While its signed URL is valid, S3 takes a
    PUT to it without asking us: the row stays, canceled, so that the purge removes the bytes again once
    the URL has expired (deleted at once, a late PUT's object was kept by nothing and never removed).
    Local storage's PUT is ours, and refuses an upload no row names."""
    if not state.storage.is_local and upload.expires_at > utcnow():
        _cancel(state, upload)
    else:
        delete_upload(state, upload)


def _cancel(state: AppState, upload: Upload) -> None:
    """The bytes go, and the row stays until its URL expires (a late PUT is refused or purged, its slot
    not counted), but not the customer's file name: nothing shows a canceled upload again."""
    canceled = {
        Upload.status: UploadStatus.CANCELED,
        Upload.received_size: None,
        Upload.filename: DELETED_FILENAME,
    }
    Upload.update(canceled).where(Upload.id == upload.id).execute()
    state.storage.delete(upload.storage_key)  # a storage that fails rolls the row back: retry the DELETE


def _expired(now: dt.datetime) -> pw.Expression:
    """Never completed, or canceled, and its URL expired: no PUT can store anything under it any more."""
    unfinished = [UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.CANCELED]
    return Upload.status.in_(unfinished) & (Upload.expires_at < now)


def _unused(now: dt.datetime) -> pw.Expression:
    """Completed over UNUSED_RETENTION ago and used by no transcription (checked again once locked)."""
    done_at = pw.fn.COALESCE(Upload.completed_at, Upload.created_at)
    used = Transcription.select(Transcription.id).where(Transcription.upload == Upload.id)
    return (
        (Upload.status == UploadStatus.COMPLETED) & (done_at < now - UNUSED_RETENTION) & ~pw.fn.EXISTS(used)
    )


def purge_expired(state: AppState) -> int:
    """Remove what nothing will use: uploads whose URL expired before they were completed, completed
    uploads no transcription used for UNUSED_RETENTION (rows and bytes), then the temp and lock files
    that processes killed mid-write left in local storage, once as old as an upload URL; last, what was
    deleted is erased from SQLite's log."""
    now = utcnow()
    count = _purge(state, _expired(now)) + _purge(state, _unused(now))
    state.storage.sweep_leftovers(URL_TTL.total_seconds())
    erase_deleted_rows_from_wal(wait=True)  # also what a delete's checkpoint could not finish (readers)
    return count


def _purge(state: AppState, condition: pw.Expression) -> int:
    """Each upload is locked and checked again before it goes: one completed meanwhile (and perhaps
    already transcribed) had been deleted under its transcriptions. Whether a transcription uses it is
    asked after the lock, in a statement of its own: a transcription created while the purge waited
    for the lock is seen then (PostgreSQL's re-check of a locked row does not run subqueries again)."""
    count = 0
    for (upload_id,) in Upload.select(Upload.id).where(condition).tuples():
        with write_transaction():
            upload = locked(Upload.select().where((Upload.id == upload_id) & condition)).first()
            if upload is None or upload.transcriptions.exists():
                continue
            delete_upload(state, upload)
        forget_deleted(state, upload.public_id)  # a keyed presign's answer replayed its signed URL
        count += 1
    return count
