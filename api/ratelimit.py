"""Requests per minute per organization (flask-limiter, counters in Redis so every API process shares them).

The limit follows the caller's plan (`services.plans`); unauthenticated requests (health, docs, signed
upload URLs) are not counted. Headers follow the IETF draft: RateLimit-Limit / -Remaining / -Reset
(seconds until the window resets) on every counted response, Retry-After on 429.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, has_request_context
from flask_limiter import Limiter, RateLimitExceeded
from limits.storage import RedisStorage

from api.errors import error_response
from api.services.plans import limits_for
from cliptext.errors import ErrorCode


class OneTripRedisStorage(RedisStorage):
    """limits' Redis storage whose hit also returns the window's expiry, for the rest of the request.

    After each hit flask-limiter reads the window back (GET, then TTL) to write the headers: two more
    round trips, which cost more CPU than the whole view of a small GET. Here the hit's script returns
    the count and the expiry together, and reads of that key in the same request are answered from
    them: the count as this request left it. Outside a request (CLI, tests) it is limits' storage.
    """

    STORAGE_SCHEME = ["cliptext+redis", "cliptext+rediss"]
    SCRIPT_INCR_EXPIRE_PTTL = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("pttl", KEYS[1])}
"""

    def __init__(self, uri: str, **options) -> None:
        super().__init__(uri.removeprefix("cliptext+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_pttl = self.get_connection().register_script(self.SCRIPT_INCR_EXPIRE_PTTL)

    @staticmethod
    def _seen() -> dict[str, tuple[int, float]] | None:
        return g.setdefault("rate_limit_windows", {}) if has_request_context() else None

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, pttl = self.lua_incr_expire_pttl([self.prefixed_key(key)], [expiry, amount])
        seen = self._seen()
        if seen is not None:
            seen[key] = (int(count), time.time() + max(int(pttl), 0) / 1000)
        return int(count)

    def get(self, key: str) -> int:
        window = (self._seen() or {}).get(key)
        return window[0] if window else super().get(key)

    def get_expiry(self, key: str) -> float:
        window = (self._seen() or {}).get(key)
        return window[1] if window else super().get_expiry(key)


def _org_key() -> str:
    org = g.get("org")
    return org.public_id if org is not None else "anonymous"


def _org_limit() -> str:
    org = g.get("org")
    if org is None:  # evaluated before exemption is checked; unauthenticated requests are exempt
        return "1000000/minute"
    return f"{limits_for(org).requests_per_minute}/minute"


def _not_authenticated() -> bool:
    return g.get("org") is None


def init_rate_limits(app: Flask, redis_url: str, key_prefix: str) -> Limiter:
    """Attach a Limiter to `app` (one per app instance; the counters live in Redis)."""
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # we write the standard headers ourselves
    limiter = Limiter(
        key_func=_org_key,
        application_limits=[_org_limit],
        application_limits_exempt_when=_not_authenticated,
        storage_uri=f"cliptext+{redis_url}" if redis_url.startswith(("redis://", "rediss://")) else redis_url,
        strategy="fixed-window",
        key_prefix=f"{key_prefix}ratelimit",
        swallow_errors=False,
    )
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded) -> Response:
        limit = error.limit.limit
        return error_response(
            ErrorCode.RATE_LIMITED,
            f"Rate limit of {limit.amount} requests per {limit.get_expiry()} seconds exceeded",
            {"limit": str(limit), "requests_per_minute": limit.amount},
        )

    @app.after_request
    def rate_limit_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        seconds = max(0, int(current.reset_at - time.time()))
        response.headers["RateLimit-Limit"] = str(current.limit.amount)
        response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
        response.headers["RateLimit-Reset"] = str(seconds)
        if response.status_code == 429 and current.breached:
            response.headers["Retry-After"] = str(max(1, seconds))
        return response

    return limiter
