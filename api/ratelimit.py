"""Requests per minute per organization: a fixed window counted in Redis, so every API process shares it.

The limit follows the caller's plan (`services.plans`); unauthenticated requests (health, docs, signed
upload URLs) are not counted. Headers follow the IETF draft: RateLimit-Limit / -Remaining / -Reset
(seconds until the window resets) on every counted response, Retry-After on 429.

One Lua script per request counts the hit and reads the window's time left in a single round trip
(flask-limiter needed three), and the count it returns is this request's own: under a burst from many
processes each admitted request sees its exact RateLimit-Remaining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis
from flask import Flask, Response, g

from api.errors import ApiError
from api.services.plans import limits_for
from cliptext.errors import ErrorCode

WINDOW_SECONDS = 60

# KEYS[1] the window's counter; ARGV[1] the window in ms -> {hits including this one, ms left}
_HIT = """
local hits = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {hits, left}
"""


@dataclass(frozen=True)
class Window:
    limit: int
    hits: int
    reset_seconds: int  # whole seconds until the window resets, rounded up: waiting that long is enough

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.hits)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def init_rate_limits(app: Flask, redis_url: str, key_prefix: str) -> None:
    """Count every authenticated request of `app` against its organization's plan (before the view)."""
    connection = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    hit = connection.register_script(_HIT)

    @app.before_request
    def count_request() -> None:  # registered after load_principal: g.org is known
        org = g.get("org")
        if org is None:
            return
        limit = limits_for(org).requests_per_minute
        hits, left_ms = hit(keys=[f"{key_prefix}ratelimit:{org.public_id}"], args=[WINDOW_SECONDS * 1000])
        window = Window(limit=limit, hits=int(hits), reset_seconds=max(1, math.ceil(int(left_ms) / 1000)))
        g.rate_window = window
        if window.hits > limit:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                f"Rate limit of {limit} requests per {WINDOW_SECONDS} seconds exceeded",
                {"limit": f"{limit} per 1 minute", "requests_per_minute": limit},
                headers={**window.headers(), "Retry-After": str(window.reset_seconds)},
            )

    @app.after_request
    def rate_limit_headers(response: Response) -> Response:
        window = g.get("rate_window")
        if window is not None:
            for name, value in window.headers().items():
                response.headers.setdefault(name, value)
        return response
