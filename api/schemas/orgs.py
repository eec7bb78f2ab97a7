"""Organization and membership bodies."""

from __future__ import annotations

import marshmallow as ma

from api.models import Plan, Role
from api.schemas.common import StrictSchema, UTCDateTime


class LimitsSchema(ma.Schema):
    requests_per_minute = ma.fields.Integer()
    concurrent_uploads = ma.fields.Integer()


class OrganizationSchema(ma.Schema):
    id = ma.fields.String(attribute="public_id")
    name = ma.fields.String()
    plan = ma.fields.String(metadata={"enum": list(Plan.ALL)})
    role = ma.fields.String(metadata={"description": "your role in it"})
    member_count = ma.fields.Integer()
    limits = ma.fields.Nested(LimitsSchema)
    created_at = UTCDateTime()


class OrganizationListSchema(ma.Schema):
    data = ma.fields.List(ma.fields.Nested(OrganizationSchema))


class AddMemberSchema(StrictSchema):
    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=320))
    role = ma.fields.String(load_default=Role.MEMBER, validate=ma.validate.OneOf(Role.ALL))


class MemberSchema(ma.Schema):
    id = ma.fields.String(metadata={"description": "the user's id (usr_…)"})
    email = ma.fields.String()
    role = ma.fields.String()
    created_at = UTCDateTime()


class WebhookSecretSchema(ma.Schema):
    secret = ma.fields.String(
        metadata={"description": "signs every webhook delivery (HMAC-SHA256, see docs/webhooks.md)"}
    )
    previous_secret_valid_until = UTCDateTime(
        allow_none=True,
        metadata={
            "description": "until when deliveries are also signed with the secret the last rotation "
            "replaced (24 h after it); null when they no longer are"
        },
    )
