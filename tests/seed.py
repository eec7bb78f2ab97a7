"""Rows the tests and benchmarks start from, written straight to the database (inside a connection)."""

from __future__ import annotations

from api.models import Organization, Upload, utcnow


def completed_upload(org: Organization, name: str = "seed.mp3", duration: float = 1.0) -> Upload:
    """An upload as it stands after POST /v1/uploads/complete: received, probed, not yet transcribed."""
    return Upload.create(
        organization=org,
        filename=name,
        content_type="audio/mpeg",
        declared_size=10,
        storage_key=f"uploads/{org.public_id}/{name.partition('.')[0]}",  # keys are [A-Za-z0-9_/]
        status="completed",
        expires_at=utcnow(),
        completed_at=utcnow(),
        duration=duration,
    )
