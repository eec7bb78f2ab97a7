"""Health check body."""

from __future__ import annotations

import marshmallow as ma


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"example": "ok"})
    database = ma.fields.String(metadata={"example": "ok"})
    redis = ma.fields.String(metadata={"example": "ok"})
