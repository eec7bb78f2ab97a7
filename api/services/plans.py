"""What each plan allows: requests per minute and concurrent uploads (Enterprise: per organization)."""

from __future__ import annotations

from dataclasses import dataclass

from api.models import Organization, Plan


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    concurrent_uploads: int


PLAN_LIMITS: dict[str, Limits] = {
    Plan.FREE: Limits(requests_per_minute=10, concurrent_uploads=1),
    Plan.PRO: Limits(requests_per_minute=60, concurrent_uploads=5),
    # Enterprise without a negotiated figure yet
    Plan.ENTERPRISE: Limits(requests_per_minute=600, concurrent_uploads=20),
}


def limits_for(org: Organization) -> Limits:
    """The plan's limits; an Enterprise organization's custom figures win where set."""
    base = PLAN_LIMITS[org.plan]
    if org.plan != Plan.ENTERPRISE:
        return base
    return Limits(
        requests_per_minute=org.custom_rate_limit or base.requests_per_minute,
        concurrent_uploads=org.custom_concurrent_uploads or base.concurrent_uploads,
    )
