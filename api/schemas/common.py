"""Fields and schemas shared by several resources."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma


class UTCDateTime(ma.fields.DateTime):
    """Naive UTC datetimes from the database, written as ISO 8601 with a `Z`."""

    def _serialize(self, value: dt.datetime | None, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.replace(microsecond=0).isoformat() + "Z"


class StrictSchema(ma.Schema):
    """Request bodies: unknown fields are an error, not silently dropped."""

    class Meta:
        unknown = ma.RAISE
