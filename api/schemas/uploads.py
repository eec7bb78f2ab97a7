"""Upload request/response bodies."""

from __future__ import annotations

import marshmallow as ma

from api.schemas.common import StrictSchema, UTCDateTime


class PresignRequestSchema(StrictSchema):
    filename = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=1000))
    content_type = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    size = ma.fields.Integer(
        required=True, strict=True, validate=ma.validate.Range(min=1), metadata={"description": "bytes"}
    )


class PresignResponseSchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "upl_3fK9aQ2LmN8pR4sT6vW1xY"})
    url = ma.fields.String(metadata={"description": "Where to PUT the bytes (one PUT, before expires_at)"})
    method = ma.fields.String(metadata={"example": "PUT"})
    headers = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    expires_at = UTCDateTime()


class CompleteRequestSchema(StrictSchema):
    upload_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=40))


class UploadSchema(ma.Schema):
    id = ma.fields.String(attribute="public_id")
    filename = ma.fields.String()
    content_type = ma.fields.String()
    size = ma.fields.Integer(attribute="declared_size")
    status = ma.fields.String()
    duration = ma.fields.Float(allow_none=True)
    created_at = UTCDateTime()
    expires_at = UTCDateTime()
    completed_at = UTCDateTime(allow_none=True)
