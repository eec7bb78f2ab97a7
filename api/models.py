"""The tables of Cliptext (Peewee), shared by the API, the jobs worker and the CLI.

Rows are addressed from the outside only by their `public_id` (`org_…`, `txn_…`); the integer
primary keys never leave the database. Timestamps are naive UTC (`utcnow()`).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import string
from typing import Any

import peewee as pw

from api.db import db

_ALPHABET = string.ascii_letters + string.digits


def utcnow() -> dt.datetime:
    """Naive UTC now (what every DateTimeField stores)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def new_public_id(prefix: str) -> str:
    """`prefix_` + 22 random base62 characters (~131 bits): unguessable, not sequential."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


class JSONField(pw.TextField):
    """JSON stored as text: the same on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = db


class Plan:
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"
    ALL = (FREE, PRO, ENTERPRISE)


class Role:
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    ALL = (OWNER, ADMIN, MEMBER)
    MANAGERS = (OWNER, ADMIN)


class UploadStatus:
    PENDING = "pending"  # URL issued, bytes not yet received
    UPLOADED = "uploaded"  # bytes received, not yet verified
    COMPLETED = "completed"  # verified audio/video, usable by transcriptions
    # deleted by its owner: bytes gone, slot free; the row stays until its URL expires, then the purge
    # removes it with whatever a late PUT to that URL (S3's cannot be revoked) stored
    CANCELED = "canceled"
    ALL = (PENDING, UPLOADED, COMPLETED)


class TranscriptionStatus:
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    ALL = (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELED)
    FINAL = (COMPLETED, FAILED, CANCELED)


class Organization(BaseModel):
    public_id = pw.CharField(max_length=40, unique=True, default=lambda: new_public_id("org"))
    name = pw.CharField(max_length=200)
    plan = pw.CharField(max_length=20, default=Plan.FREE)
    # Enterprise only: requests per minute and concurrent uploads (None = plan default)
    custom_rate_limit = pw.IntegerField(null=True)
    custom_concurrent_uploads = pw.IntegerField(null=True)
    webhook_secret = pw.CharField(max_length=100, default=lambda: secrets.token_urlsafe(32))
    # the secret a rotation replaced, and when: deliveries are signed with it too for a while after
    # (api.services.orgs.WEBHOOK_SECRET_OVERLAP), so receivers can switch without refusing any
    webhook_secret_previous = pw.CharField(max_length=100, null=True)
    webhook_secret_rotated_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)


class User(BaseModel):
    public_id = pw.CharField(max_length=40, unique=True, default=lambda: new_public_id("usr"))
    email = pw.CharField(max_length=320, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class Membership(BaseModel):
    organization = pw.ForeignKeyField(Organization, backref="memberships", on_delete="CASCADE")
    user = pw.ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    role = pw.CharField(max_length=20, default=Role.MEMBER)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("organization", "user"), True),)


class ApiKey(BaseModel):
    """A Bearer key: only its SHA-256 is stored, plus a short visible prefix to recognise it."""

    public_id = pw.CharField(max_length=40, unique=True, default=lambda: new_public_id("key"))
    membership = pw.ForeignKeyField(Membership, backref="api_keys", on_delete="CASCADE")
    key_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=20)
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)
    last_used_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "api_key"


class Upload(BaseModel):
    public_id = pw.CharField(max_length=40, unique=True, default=lambda: new_public_id("upl"))
    organization = pw.ForeignKeyField(Organization, backref="uploads", on_delete="CASCADE")
    filename = pw.CharField(max_length=255)  # sanitised, metadata only: never a path on disk
    content_type = pw.CharField(max_length=100)
    declared_size = pw.BigIntegerField()
    received_size = pw.BigIntegerField(null=True)
    storage_key = pw.CharField(max_length=200, unique=True)
    status = pw.CharField(max_length=20, default=UploadStatus.PENDING, index=True)
    duration = pw.FloatField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()
    completed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("organization", "status"), False),)  # the concurrent-upload cap's count


class Transcription(BaseModel):
    """One transcription request. The RQ job id is `public_id`; the job receives it as its argument."""

    public_id = pw.CharField(max_length=40, unique=True, default=lambda: new_public_id("txn"))
    organization = pw.ForeignKeyField(Organization, backref="transcriptions", on_delete="CASCADE")
    upload = pw.ForeignKeyField(Upload, backref="transcriptions", null=True, on_delete="SET NULL")
    status = pw.CharField(max_length=20, default=TranscriptionStatus.QUEUED, index=True)
    text = pw.TextField(null=True)
    duration = pw.FloatField(null=True)
    language = pw.CharField(max_length=20, null=True)
    progress = pw.FloatField(null=True)  # 0.0 … 1.0 while processing
    error_code = pw.CharField(max_length=40, null=True)
    error_message = pw.TextField(null=True)
    options = JSONField(default=dict)  # {"language", "prompt", "word_timestamps"}
    webhook_url = pw.CharField(max_length=2000, null=True)
    created_at = pw.DateTimeField(default=utcnow)  # indexed after the organization (Meta)
    started_at = pw.DateTimeField(null=True)
    completed_at = pw.DateTimeField(null=True, index=True)  # the missed-webhook sweep

    class Meta:
        # an organization's list, newest first, whole or of one status: a page reads its rows and no
        # more (migration 006); (status, completed_at): the missed-webhook sweep on SQLite too
        indexes = (
            (("organization", "created_at", "id"), False),
            (("organization", "status", "created_at", "id"), False),
            (("status", "completed_at"), False),
        )


class Segment(BaseModel):
    """One transcript segment; UNIQUE (transcription, index) so a re-run job upserts, never duplicates."""

    transcription = pw.ForeignKeyField(Transcription, backref="segments", on_delete="CASCADE")
    index = pw.IntegerField()
    start = pw.FloatField()
    end = pw.FloatField()
    text = pw.TextField()
    words = JSONField(null=True)  # [{"start", "end", "word", "probability"}] when word timestamps asked
    # decoding details (OpenAI's verbose_json); None on rows written before migration 002
    seek = pw.IntegerField(null=True)  # window position in mel frames (100 per second)
    tokens = JSONField(null=True)  # text token ids
    temperature = pw.FloatField(null=True)
    avg_logprob = pw.FloatField(null=True)
    compression_ratio = pw.FloatField(null=True)
    no_speech_prob = pw.FloatField(null=True)

    class Meta:
        indexes = ((("transcription", "index"), True),)


class DeletedTranscription(BaseModel):
    """Where a deleted transcription stood in its organization's list, and nothing else: a client
    paging with `starting_after` set to it (deleted meanwhile, by itself or another) gets the next
    page. Kept `DELETED_CURSOR_DAYS`; no transcript, audio or options."""

    public_id = pw.CharField(max_length=40, unique=True)
    organization = pw.ForeignKeyField(Organization, on_delete="CASCADE")
    created_at = pw.DateTimeField()
    row_id = pw.IntegerField()  # the transcription's id: ties on created_at are ordered by it
    deleted_at = pw.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "deleted_transcription"


class WebhookDelivery(BaseModel):
    transcription = pw.ForeignKeyField(Transcription, backref="webhook_deliveries", on_delete="CASCADE")
    attempt = pw.IntegerField()
    status_code = pw.IntegerField(null=True)
    error = pw.TextField(null=True)
    at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "webhook_delivery"


ALL_MODELS: list[type[BaseModel]] = [
    Organization,
    User,
    Membership,
    ApiKey,
    Upload,
    Transcription,
    Segment,
    WebhookDelivery,
    DeletedTranscription,
]
