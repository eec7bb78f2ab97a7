"""What the SDK (cliptext.sdk) returns and raises: frozen dataclasses built from the API's JSON (each
keeps the whole JSON in `.raw`), and CliptextError, the API's error envelope."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

FINAL_STATUSES = frozenset({"completed", "failed", "canceled"})


class UploadInterrupted(KeyboardInterrupt):
    """Ctrl-C during an upload whose give-back did not go through in time (the DELETE rate limited too):
    `upload_id` holds one of the plan's concurrent uploads until its URL expires, unless deleted."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class CliptextError(Exception):
    """Any error: the API's envelope {"error": {code, message, details}} plus the HTTP status.

    `status` is None when no HTTP answer came (network error, local timeout); `retry_after` is the
    server's Retry-After in seconds when it sent one; `request_id` is the X-Request-Id of the request
    (what the API logged it under: quote it to support), also when no answer came.
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        status: int | None = None,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


# ---------------------------------------------------------------------------------------------------
# results


def _parse_time(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


T = TypeVar("T")


def _required(field_: dataclasses.Field[Any]) -> bool:
    return field_.default is dataclasses.MISSING and field_.default_factory is dataclasses.MISSING


def _build(cls: type[T], data: Mapping[str, Any], **converted: Any) -> T:
    """An instance of a result dataclass from a JSON object: known fields taken, the rest kept in `raw`."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    values = {k: v for k, v in data.items() if k in names}
    values.update(converted)
    missing = [f.name for f in fields if f.name not in values and _required(f)]
    if missing:  # another service's JSON (a base URL that is not the API's): not a TypeError traceback
        raise CliptextError(
            "INTERNAL",
            f"The answer is not a {cls.__name__}: it has no {', '.join(missing)} "
            "(is the base URL the API's /v1?)",
            {"missing": missing},
        )
    values["raw"] = dict(data)
    return cls(**values)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    id: int | None = None
    channel: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Segment:
        words = tuple(_build(Word, w) for w in data.get("words") or ())
        return _build(cls, data, words=words)


@dataclass(frozen=True)
class TranscriptionError:
    code: str
    message: str


@dataclass(frozen=True)
class Transcription:
    """A transcription: `segments` always; `words` from get_transcription(format="verbose_json", ...)."""

    id: str
    status: str
    text: str | None = None
    language: str | None = None
    duration: float | None = None
    progress: float | None = None
    upload_id: str | None = None
    webhook_url: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    error: TranscriptionError | None = None
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] = ()  # verbose_json with the "word" granularity
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True once the status is final (completed, failed or canceled)."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transcription:
        error = data.get("error")
        if isinstance(error, Mapping):
            error = TranscriptionError(str(error.get("code", "")), str(error.get("message", "")))
        elif data.get("error_code"):
            error = TranscriptionError(str(data["error_code"]), str(data.get("error_message") or ""))
        else:
            error = None
        upload = data.get("upload_id") or data.get("upload")
        return _build(
            cls,
            data,
            error=error,
            upload_id=upload if isinstance(upload, str) else None,
            segments=tuple(Segment.from_json(s) for s in data.get("segments") or ()),
            words=tuple(_build(Word, w) for w in data.get("words") or ()),
            options=dict(data.get("options") or {}),
            created_at=_parse_time(data.get("created_at")),
            started_at=_parse_time(data.get("started_at")),
            completed_at=_parse_time(data.get("completed_at")),
        )


@dataclass(frozen=True)
class Upload:
    id: str
    status: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    duration: float | None = None
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Upload:
        return _build(
            cls,
            data,
            created_at=_parse_time(data.get("created_at")),
            expires_at=_parse_time(data.get("expires_at")),
            completed_at=_parse_time(data.get("completed_at")),
        )


@dataclass(frozen=True)
class PresignedUpload:
    """Where and how to PUT the bytes of an upload (POST /uploads/presigned)."""

    id: str
    url: str
    method: str = "PUT"
    headers: Mapping[str, str] = field(default_factory=dict)
    expires_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PresignedUpload:
        return _build(
            cls, data, headers=dict(data.get("headers") or {}), expires_at=_parse_time(data.get("expires_at"))
        )


@dataclass(frozen=True)
class Member:
    """A member of an organization; `id` is the user's id (usr_…)."""

    email: str
    role: str
    id: str | None = None
    created_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Member:
        return _build(cls, data, created_at=_parse_time(data.get("created_at")))


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    concurrent_uploads: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Organization:
    """An organization; `role` is the caller's role in it."""

    id: str
    name: str
    plan: str | None = None
    role: str | None = None
    member_count: int | None = None
    limits: Limits | None = None
    created_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Organization:
        limits = data.get("limits")
        return _build(
            cls,
            data,
            limits=_build(Limits, limits) if isinstance(limits, Mapping) else None,
            created_at=_parse_time(data.get("created_at")),
        )


@dataclass(frozen=True)
class WebhookSecret:
    """An organization's webhook signing secret (owners and admins only); after a rotation, deliveries
    are also signed with the old one until `previous_secret_valid_until` (None: only this one)."""

    secret: str
    previous_secret_valid_until: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:  # a secret is not printed by a log line that shows the object
        return f"WebhookSecret(secret='…', previous_secret_valid_until={self.previous_secret_valid_until!r})"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookSecret:
        return _build(
            cls, data, previous_secret_valid_until=_parse_time(data.get("previous_secret_valid_until"))
        )


@dataclass(frozen=True)
class ApiKey:
    """An API key of an organization: `member_id` / `member_email` say whose it is. `key`, the key
    itself, is set only in what create_key() returns (the API shows it that once); never printed."""

    id: str
    prefix: str
    member_id: str | None = None
    member_email: str | None = None
    created_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    key: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiKey:
        member = data.get("member")
        member = member if isinstance(member, Mapping) else {}
        return _build(
            cls,
            data,
            member_id=member.get("id"),
            member_email=member.get("email"),
            created_at=_parse_time(data.get("created_at")),
            last_used_at=_parse_time(data.get("last_used_at")),
            revoked_at=_parse_time(data.get("revoked_at")),
        )
