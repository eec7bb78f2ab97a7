"""Requests per minute per organization: a fixed window counted in Redis, so every API process shares it.

The limit follows the caller's plan (`services.plans`); unauthenticated requests (health, docs, signed
upload URLs, 404/405) are not counted. Headers follow the IETF draft: RateLimit-Limit / -Remaining /
-Reset (seconds until the window resets) on every counted response, Retry-After on 429.

One Redis round trip per request: a Lua script increments the organization's window counter, starts the
window's expiry on its first hit and returns the count with the time left, atomically — the count is
exact across processes, and the headers describe the very hit that was counted (flask-limiter needed
three round trips: INCR, then GET and TTL for the headers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flask import Flask, Response, g
from redis.commands.core import Script

from api.errors import error_response
from api.models import Organization
from api.services.plans import limits_for
from api.state import AppState
from cliptext.errors import ErrorCode

WINDOW_SECONDS = 60

# KEYS[1] the window's counter; ARGV[1] the window in ms. Returns {count, ms until the window resets}.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True)
class WindowHit:
    """This request's hit: the plan's limit, the count including it, milliseconds until the reset."""

    limit: int
    count: int
    reset_ms: int

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def reset_seconds(self) -> int:
        """Rounded up: waiting this long is always enough."""
        return max(0, math.ceil(self.reset_ms / 1000))

    @property
    def description(self) -> str:
        return f"{self.limit} per 1 minute"


def _hit(app_state: AppState, script: Script, org: Organization) -> WindowHit:
    limit = limits_for(org).requests_per_minute
    key = app_state.key(f"ratelimit/{org.public_id}/{limit}/minute")
    count, reset_ms = script(keys=[key], args=[WINDOW_SECONDS * 1000])
    return WindowHit(limit=limit, count=int(count), reset_ms=int(reset_ms))


def _rate_limit_headers(response: Response) -> Response:
    hit: WindowHit | None = g.get("rate_limit")
    if hit is None:
        return response
    seconds = hit.reset_seconds
    response.headers["RateLimit-Limit"] = str(hit.limit)
    response.headers["RateLimit-Remaining"] = str(hit.remaining)
    response.headers["RateLimit-Reset"] = str(seconds)
    if response.status_code == 429 and not hit.allowed:
        response.headers["Retry-After"] = str(max(1, seconds))
    return response


def init_rate_limits(app: Flask) -> None:
    """Count every authenticated request of `app` (register after the auth hook: it sets g.org)."""
    app_state: AppState = app.extensions["cliptext"]
    script = app_state.redis.register_script(_HIT)  # EVALSHA, loaded into Redis on first use

    def check_rate_limit() -> Response | None:
        org = g.get("org")
        if org is None:
            return None  # unauthenticated: not counted
        hit = g.rate_limit = _hit(app_state, script, org)
        if hit.allowed:
            return None
        return error_response(
            ErrorCode.RATE_LIMITED,
            f"Rate limit of {hit.limit} requests per {WINDOW_SECONDS} seconds exceeded",
            {"limit": hit.description, "requests_per_minute": hit.limit},
        )

    app.before_request(check_rate_limit)
    app.after_request(_rate_limit_headers)
