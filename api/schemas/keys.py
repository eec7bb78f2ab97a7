"""API key bodies: what a member sends to create a key, and a key as listed (never its hash)."""

from __future__ import annotations

import marshmallow as ma

from api.schemas.common import ResponseSchema, StrictSchema, UTCDateTime


class CreateKeySchema(StrictSchema):
    member_id = ma.fields.String(
        validate=ma.validate.Length(min=1, max=40),
        metadata={"description": "the member (user id, usr_…) the key is for; yours when left out"},
    )


class KeyMemberSchema(ResponseSchema):
    id = ma.fields.String(metadata={"description": "the user's id (usr_…)"})
    email = ma.fields.String()


class ApiKeySchema(ResponseSchema):
    id = ma.fields.String(attribute="public_id", metadata={"example": "key_abc123"})
    prefix = ma.fields.String(metadata={"description": "the key's first characters, to recognise it"})
    member = ma.fields.Nested(KeyMemberSchema, metadata={"description": "whose key it is"})
    created_at = UTCDateTime()
    last_used_at = UTCDateTime(
        allow_none=True, metadata={"description": "to the minute; null when never used"}
    )
    revoked_at = UTCDateTime(allow_none=True, metadata={"description": "null while the key works"})


class CreatedKeySchema(ApiKeySchema):
    key = ma.fields.String(
        metadata={"description": "the key itself: shown this once, stored only hashed (send it as Bearer)"}
    )


class KeyListQuerySchema(StrictSchema):
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=100))
    starting_after = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=40),
        metadata={"description": "The id of the last key of the previous page"},
    )


class ApiKeyListSchema(ResponseSchema):
    data = ma.fields.List(ma.fields.Nested(ApiKeySchema))
    has_more = ma.fields.Boolean()
