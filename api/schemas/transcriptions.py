"""Transcription request/response bodies."""

from __future__ import annotations

import marshmallow as ma

from api.formats import FORMATS, GRANULARITIES
from api.models import TranscriptionStatus
from api.schemas.common import LANGUAGE_CODE, FullMatch, ResponseSchema, StrictSchema, UTCDateTime

_LANGUAGE = FullMatch(LANGUAGE_CODE, error="Not a language code (e.g. 'en').")


class TranscriptionOptionsSchema(StrictSchema):
    """The options shared by the JSON and the multipart forms."""

    language = ma.fields.String(load_default=None, allow_none=True, validate=_LANGUAGE)
    prompt = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=1000))
    webhook_url = ma.fields.Url(
        load_default=None,
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=ma.validate.Length(max=2000),
    )
    word_timestamps = ma.fields.Boolean(load_default=False)


class CreateTranscriptionSchema(TranscriptionOptionsSchema):
    upload_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=40))


class CreateTranscriptionFormSchema(TranscriptionOptionsSchema):
    """multipart/form-data: the options as form fields; the audio in the `file` part."""

    class Meta:
        unknown = ma.EXCLUDE


class FileSchema(ma.Schema):
    file = ma.fields.Raw(metadata={"type": "string", "format": "binary"}, required=True)


class SegmentSchema(ResponseSchema):
    start = ma.fields.Float()
    end = ma.fields.Float()
    text = ma.fields.String()
    words = ma.fields.List(ma.fields.Dict(), allow_none=True)


class TranscriptionErrorSchema(ResponseSchema):
    code = ma.fields.String()
    message = ma.fields.String()


class TranscriptionSchema(ResponseSchema):
    id = ma.fields.String(attribute="public_id", metadata={"example": "txn_abc123"})
    status = ma.fields.String(metadata={"enum": list(TranscriptionStatus.ALL)})
    text = ma.fields.String(allow_none=True)
    duration = ma.fields.Float(allow_none=True)
    language = ma.fields.String(allow_none=True)
    progress = ma.fields.Float(allow_none=True, metadata={"description": "0-1 while processing"})
    upload_id = ma.fields.Method("_upload_id", allow_none=True)
    options = ma.fields.Dict()
    webhook_url = ma.fields.String(allow_none=True)
    created_at = UTCDateTime()
    started_at = UTCDateTime(allow_none=True)
    completed_at = UTCDateTime(allow_none=True)
    error = ma.fields.Method(
        "_error", allow_none=True, metadata={"description": "{code, message} when failed"}
    )
    segments = ma.fields.List(ma.fields.Nested(SegmentSchema), attribute="segment_list")

    def _upload_id(self, obj) -> str | None:
        if not obj.upload_id:
            return None
        return getattr(obj, "upload_public_id", None) or obj.upload.public_id  # joined, else loaded

    def _error(self, obj) -> dict | None:
        if obj.error_code is None:
            return None
        return {"code": obj.error_code, "message": obj.error_message or ""}


class ListQuerySchema(StrictSchema):
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100))
    starting_after = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=40),
        metadata={
            "description": "The id of the last item of the previous page; still the page's place for "
            "7 days after that transcription is deleted"
        },
    )
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(TranscriptionStatus.ALL))


class TranscriptionSummarySchema(TranscriptionSchema):
    """A list item: everything but the segments."""

    class Meta:
        exclude = ("segments",)


class TranscriptionListSchema(ResponseSchema):
    data = ma.fields.List(ma.fields.Nested(TranscriptionSummarySchema))
    has_more = ma.fields.Boolean()


class FormatQuerySchema(StrictSchema):
    """GET /v1/transcriptions/{id}: which representation (the `format` parameter wins over Accept)."""

    format = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(FORMATS),
        metadata={
            "description": "json (default), text, srt, vtt or verbose_json (OpenAI's). Alternatively send "
            "Accept: text/plain, application/x-subrip or text/vtt"
        },
    )
    timestamp_granularities = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(GRANULARITIES)),
        load_default=lambda: ["segment"],
        metadata={
            "description": "verbose_json only: `segment` and/or `word` (words need a transcription "
            "created with word_timestamps: true; else 409)"
        },
    )
