"""Organization and membership bodies."""

from __future__ import annotations

import unicodedata
from typing import Any

import marshmallow as ma

from api.models import Plan, Role
from api.schemas.common import ResponseSchema, StrictSchema, UTCDateTime


class LimitsSchema(ma.Schema):
    requests_per_minute = ma.fields.Integer()
    concurrent_uploads = ma.fields.Integer()


class OrganizationSchema(ma.Schema):
    id = ma.fields.String(attribute="public_id")
    name = ma.fields.String()
    plan = ma.fields.String(metadata={"enum": list(Plan.ALL)})
    role = ma.fields.String(metadata={"description": "your role in it", "enum": list(Role.ALL)})
    member_count = ma.fields.Integer()
    limits = ma.fields.Nested(LimitsSchema)
    created_at = UTCDateTime()


class OrganizationListSchema(ma.Schema):
    data = ma.fields.List(ma.fields.Nested(OrganizationSchema))


class MemberEmail(ma.fields.Email):
    """An email checked in the form the service stores it (NFKC, trimmed; services.orgs.normalize_email
    lower-cases it too): " bob@acme.test\\n" pasted from a sheet, or a fullwidth "＠", was a 422 here
    while the operator's `orgs add-member` took it, and the service would have stored "bob@acme.test"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        return unicodedata.normalize("NFKC", text).strip()


class AddMemberSchema(StrictSchema):
    email = MemberEmail(required=True, validate=ma.validate.Length(max=320))
    role = ma.fields.String(load_default=Role.MEMBER, validate=ma.validate.OneOf(Role.ALL))


class MemberSchema(ResponseSchema):
    id = ma.fields.String(metadata={"description": "the user's id (usr_…)"})
    email = ma.fields.String(metadata={"description": "as stored: NFKC, trimmed, lower-cased"})
    role = ma.fields.String(metadata={"enum": list(Role.ALL)})
    created_at = UTCDateTime(metadata={"description": "when they joined the organization"})


class MemberListSchema(ResponseSchema):
    data = ma.fields.List(ma.fields.Nested(MemberSchema))
    has_more = ma.fields.Boolean()


class MemberListQuerySchema(StrictSchema):
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=100))
    starting_after = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=40),
        metadata={
            "description": "The user id of the last member of the previous page; still the page's "
            "place if that member was removed since"
        },
    )


class ChangeRoleSchema(StrictSchema):
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(Role.ALL))


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
