"""Transcriptions: create + enqueue, look up within the organization, list by cursor, delete for good."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import peewee as pw
import redis.exceptions
from ssrfguard import SSRFGuardError

from api.db import erase_deleted_rows_from_wal, locked, prepared, write_transaction
from api.errors import ApiError, NotFound
from api.models import (
    DeletedTranscription,
    Organization,
    Segment,
    Transcription,
    TranscriptionStatus,
    Upload,
    UploadStatus,
    db,
    utcnow,
)
from api.queue import cancel_transcription, enqueue_transcription
from api.services.idempotency import forget_deleted
from api.services.models import check_language
from api.services.uploads import retire_upload
from api.state import AppState
from cliptext.errors import ErrorCode
from cliptext.webhook_targets import PUBLIC_ONLY, without_credentials
from jobs.timeouts import job_timeout

log = logging.getLogger(__name__)


_COLUMNS: tuple[pw.Field, ...] = tuple(Transcription._meta.sorted_fields)
_ATTRIBUTES = tuple(f.object_id_name if isinstance(f, pw.ForeignKeyField) else f.name for f in _COLUMNS)
_CONVERTERS = tuple(f.python_value for f in _COLUMNS)


class TranscriptionRow:
    """A transcription as read to answer with: every column under the model's attribute name (foreign
    keys as `upload_id`, `organization_id`), converted by its field's python_value as peewee does, and
    the joined `upload_public_id`; `segment_list` once the segments are read.

    peewee takes about 40 µs to make a Transcription model from a row (cursor wrapper, column
    resolution, the model's __init__), several times the query itself; this takes a few. For reading
    only: deleting or updating needs the model (get_transcription).
    """

    __slots__ = (*_ATTRIBUTES, "upload_public_id", "segment_list")

    def __init__(self, values: tuple[Any, ...]) -> None:
        for name, convert, value in zip(_ATTRIBUTES, _CONVERTERS, values, strict=False):
            setattr(self, name, convert(value))
        self.upload_public_id = values[-1]


@dataclass(frozen=True)
class Page:
    data: list[TranscriptionRow]
    has_more: bool


def _with_upload_id() -> pw.Query:
    """Every column of the transcription, in `_COLUMNS` order, then the upload's public id (joined)."""
    return Transcription.select(*_COLUMNS, Upload.public_id.alias("upload_public_id")).join(
        Upload, pw.JOIN.LEFT_OUTER
    )


def _by_id_query() -> pw.Query:
    return _with_upload_id().where((Transcription.public_id == "?id") & (Transcription.organization == -1))


def read_transcription(org: Organization, public_id: str) -> TranscriptionRow:
    """The transcription if it belongs to `org` (another organization's id is simply not found), to read."""
    sql, params = prepared(
        "transcription-by-id", _by_id_query, {"?id": "id", -1: "org"}, id=public_id, org=org.id
    )
    values = db.execute_sql(sql, params).fetchone()
    if values is None:
        raise NotFound("Transcription")
    return TranscriptionRow(values)


def get_transcription(org: Organization, public_id: str) -> Transcription:
    """The transcription model if it belongs to `org`; another organization's id is simply not found.

    The row carries `upload_public_id` (joined in the same query) for the response.
    """
    sql, params = prepared(
        "transcription-by-id", _by_id_query, {"?id": "id", -1: "org"}, id=public_id, org=org.id
    )
    row = next(iter(Transcription.raw(sql, *params)), None)
    if row is None:
        raise NotFound("Transcription")
    return row


def segments_of(transcription: Transcription | TranscriptionRow) -> list[Segment]:
    """The segments in order, every column (the transcript formats need the decoding details too)."""
    sql, params = prepared(
        "segments",
        lambda: Segment.select().where(Segment.transcription == -1).order_by(Segment.index),
        {-1: "transcription"},
        transcription=transcription.id,
    )
    return list(Segment.raw(sql, *params))


_ITEM_COLUMNS = (Segment.start, Segment.end, Segment.text, Segment.words)


def segment_items(transcription: Transcription | TranscriptionRow) -> list[dict[str, Any]]:
    """The segments in order as the resource shows them: {start, end, text, words} each.

    Read straight from the cursor: making 20 peewee models of 13 columns costs ten times the query.
    """
    sql, params = prepared(
        "segment-items",
        lambda: Segment.select(*_ITEM_COLUMNS).where(Segment.transcription == -1).order_by(Segment.index),
        {-1: "transcription"},
        transcription=transcription.id,
    )
    words_value = Segment.words.python_value
    return [
        {"start": start, "end": end, "text": text, "words": words_value(words)}
        for start, end, text, words in db.execute_sql(sql, params).fetchall()
    ]


def check_options(state: AppState, options: dict[str, Any]) -> None:
    """What create refuses in the options themselves; a multipart create asks before storing the file."""
    check_webhook_url(options.get("webhook_url"), state.settings.webhook_allow_private)
    check_language(state.settings, options.get("language"))


def check_webhook_url(url: str | None, allow_private: bool) -> None:
    """Refuse webhook URLs that name a local or private host outright (422).

    Only the obvious cases: a host name resolving to a private address later must still be refused by the
    worker at delivery time.
    """
    if url is None or allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # what the resolver also takes for IPv4: 127.1, 2130706433, 0x7f000001, 0177.0.0.1
            address = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            address = None
    if address is not None:
        private = private or not address.is_global
    if private:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "webhook_url must be a public http(s) address",
            {"field": "webhook_url"},
        )
    try:  # what the worker's connection would refuse by the URL alone (a host of digits and dots, say)
        PUBLIC_ONLY.check_url(url)
    except SSRFGuardError as refused:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            without_credentials(f"webhook_url is refused: {refused}", url),
            {"field": "webhook_url"},
        ) from None


def create(
    state: AppState,
    org: Organization,
    upload: Upload,
    options: dict[str, Any],
    request_id: str | None = None,
) -> Transcription:
    """Insert a queued transcription for a completed upload and enqueue its job (id = public id).

    The job's time limit follows the audio's duration (jobs.timeouts); `request_id` goes to the job's
    meta so the worker's and the inference server's log lines name the request that asked.
    """
    check_options(state, options)
    if upload.organization_id != org.id:
        raise NotFound("Upload")
    if upload.status != UploadStatus.COMPLETED:
        raise ApiError(
            ErrorCode.UPLOAD_MISSING,
            "The upload is not completed; call POST /v1/uploads/complete first",
            {"upload_id": upload.public_id, "status": upload.status},
        )
    with write_transaction():
        # the upload row is locked: a delete of its last transcription cannot remove it (and its bytes)
        # under this insert, which had been a foreign-key 500, or a 202 for audio already gone
        current = locked(Upload.select().where(Upload.id == upload.id)).first()
        if current is None or current.status != UploadStatus.COMPLETED:
            raise ApiError(ErrorCode.NOT_FOUND, "Upload not found", {"field": "upload_id"})
        row = Transcription.create(
            organization=org,
            upload=upload,
            status=TranscriptionStatus.QUEUED,
            options={k: options.get(k) for k in ("language", "prompt", "word_timestamps")},
            webhook_url=options.get("webhook_url"),
            language=options.get("language"),
            duration=upload.duration,
        )
    try:
        enqueue_transcription(
            state.redis,
            row.public_id,
            queue_name=state.queue_name,
            job_timeout=job_timeout(state.settings, upload.duration),
            request_id=request_id,
            org_public_id=org.public_id,
        )
    except Exception:
        row.delete_instance()
        raise
    return row


_PAGE_SENTINELS = {-1: "org", "?status": "status", "?created": "created", -3: "after", -2: "limit"}

# how long a deleted transcription still works as a cursor: longer than anyone pages through a list
DELETED_CURSOR_DAYS = 7


def _page_query(with_status: bool, with_cursor: bool) -> pw.Query:
    """Newest first (created_at, then id: unique), the upload's public id joined (one query per page)."""
    query = _with_upload_id().where(Transcription.organization == -1)
    if with_status:
        query = query.where(Transcription.status == "?status")
    if with_cursor:
        query = query.where(pw.Tuple(Transcription.created_at, Transcription.id) < pw.Tuple("?created", -3))
    return query.order_by(Transcription.created_at.desc(), Transcription.id.desc()).limit(-2)


def _cursor_query() -> pw.Query:
    """(created_at, id) of the cursor: a transcription of the organization, or one it deleted."""
    live = Transcription.select(Transcription.created_at, Transcription.id).where(
        (Transcription.public_id == "?after") & (Transcription.organization == -1)
    )
    deleted = DeletedTranscription.select(DeletedTranscription.created_at, DeletedTranscription.row_id).where(
        (DeletedTranscription.public_id == "?after") & (DeletedTranscription.organization == -1)
    )
    return live.union_all(deleted)  # at most one row: a public id is either live or deleted


def list_page(
    org: Organization, limit: int, starting_after: str | None = None, status: str | None = None
) -> Page:
    """Newest first; `starting_after` is the id of the last item of the previous page (deleted since or
    not: the page goes on from where it stood)."""
    position = None
    if starting_after:
        sql, params = prepared(
            "page-cursor", _cursor_query, {"?after": "after", -1: "org"}, after=starting_after, org=org.id
        )
        position = db.execute_sql(sql, params).fetchone()
        if position is None:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                "starting_after does not name one of your transcriptions",
                {"field": "starting_after"},
            )
    shape = (bool(status), position is not None)
    created, after = position or (None, None)
    sql, params = prepared(
        ("page", *shape),
        lambda: _page_query(*shape),
        _PAGE_SENTINELS,
        org=org.id,
        status=status,
        created=created,
        after=after,
        limit=limit + 1,
    )
    rows = [TranscriptionRow(values) for values in db.execute_sql(sql, params).fetchall()]
    return Page(data=rows[:limit], has_more=len(rows) > limit)


def delete(state: AppState, transcription: Transcription) -> None:
    """Remove transcript, segments, deliveries and the audio for good, then stop or drop the job.

    The rows go first: a job stopped while its transcription still stood was, at the worker's next
    maintenance, taken for one that had died with its worker and run again (the sweep, a few ms after the
    stop, saw `processing`). A job still running meanwhile stores nothing more: each of its writes names
    the status it expects (jobs.transcript_store). Once committed, SQLite's log is emptied too: it still
    held the transcript as written (api.db.erase_deleted_rows_from_wal).
    """
    with write_transaction():
        # the upload row locked first: of two deletes at once, or a delete and a create, the second
        # sees what the first did (two last deletes had each seen the other's row and kept the upload)
        upload = None
        if transcription.upload_id:
            upload = locked(Upload.select().where(Upload.id == transcription.upload_id)).first()
        # then the transcription row, before its segments: the worker's writes take them in that order
        # (jobs.transcript_store), so a delete removing the segments first and a job failing at the same
        # moment (the delete stops it) each waited for the other, and PostgreSQL aborted one of them
        locked(Transcription.select(Transcription.id).where(Transcription.id == transcription.id)).first()
        _remember_position(transcription)
        transcription.delete_instance(recursive=True)
        deleted = [transcription.public_id]
        if upload is not None and not upload.transcriptions.exists():
            retire_upload(state, upload)  # a storage that fails rolls the rows back: retry the DELETE
            deleted.append(upload.public_id)
    erase_deleted_rows_from_wal()
    # the Idempotency-Key answers kept 24 h for replay hold its prompt and webhook URL, and the upload's
    # signed URL: tombstones now
    forget_deleted(state, *deleted)
    if transcription.status not in TranscriptionStatus.FINAL:
        try:
            cancel_transcription(state.redis, transcription.public_id)
        except redis.exceptions.RedisError as error:  # deleted all the same: the job finds nothing to do
            log.warning("transcription %s deleted, its job not stopped: %s", transcription.public_id, error)


def _remember_position(transcription: Transcription) -> None:
    """Keep where `transcription` stood in the list (a cursor may name it), and forget positions older
    than DELETED_CURSOR_DAYS: the table stays as small as a week of deletes."""
    DeletedTranscription.delete().where(
        DeletedTranscription.deleted_at < utcnow() - timedelta(days=DELETED_CURSOR_DAYS)
    ).execute()
    DeletedTranscription.insert(
        public_id=transcription.public_id,
        organization=transcription.organization_id,
        created_at=transcription.created_at,
        row_id=transcription.id,
    ).on_conflict_ignore().execute()


def upload_for(org: Organization, upload_public_id: str) -> Upload:
    sql, params = prepared(
        "upload-by-id",
        lambda: Upload.select().where((Upload.public_id == "?id") & (Upload.organization == -1)),
        {"?id": "id", -1: "org"},
        id=upload_public_id,
        org=org.id,
    )
    upload = next(iter(Upload.raw(sql, *params)), None)
    if upload is None or upload.status == UploadStatus.CANCELED:
        raise ApiError(ErrorCode.NOT_FOUND, "Upload not found", {"field": "upload_id"})
    return upload
