"""Requests per minute per organization (flask-limiter, counters in Redis so every API process shares them).

The limit follows the caller's plan (`services.plans`); unauthenticated requests (health, docs, signed
upload URLs) are not counted. Headers follow the IETF draft: RateLimit-Limit / -Remaining / -Reset
(seconds until the window resets) on every counted response, Retry-After on 429.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, has_request_context, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter._limits import ApplicationLimit, RuntimeLimit
from limits.storage import RedisStorage

from api.auth import confirm_principal, generation_key
from api.errors import (
    BACKING_SERVICE_ERRORS,
    ApiError,
    error_response,
    handle_api_error,
    handle_service_unavailable,
)
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
return {current, redis.call("pttl", KEYS[1]), redis.call("get", KEYS[2]) or ""}
"""

    def __init__(self, uri: str, auth_generation_key: str = "auth:generation", **options) -> None:
        """`auth_generation_key`: what api.auth reads back with each hit (g.auth_generation)."""
        self.auth_generation_key = auth_generation_key
        super().__init__(uri.removeprefix("cliptext+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_pttl = self.get_connection().register_script(self.SCRIPT_INCR_EXPIRE_PTTL)

    @staticmethod
    def _seen() -> dict[str, tuple[int, float]] | None:
        return g.setdefault("rate_limit_windows", {}) if has_request_context() else None

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, pttl, generation = self.lua_incr_expire_pttl(
            [self.prefixed_key(key), self.auth_generation_key], [expiry, amount]
        )
        seen = self._seen()
        if seen is not None:
            seen[key] = (int(count), time.time() + max(int(pttl), 0) / 1000)
            g.auth_generation = generation.decode() if isinstance(generation, bytes) else str(generation)
        return int(count)

    def get(self, key: str) -> int:
        window = (self._seen() or {}).get(key)
        return window[0] if window else super().get(key)

    def get_expiry(self, key: str) -> float:
        window = (self._seen() or {}).get(key)
        return window[1] if window else super().get_expiry(key)


class ApplicationLimiter(Limiter):
    """flask-limiter whose request check takes a short path when only application limits are configured.

    Its general check resolves default, decorated, blueprint and meta limits and their exemptions on
    every request: about 150 µs of Python here, more than the view of a small GET and twice the Redis
    hit itself. With application limits alone (this app's configuration) the outcome reduces to: skip
    exempt endpoints and exempt limits, hit each limit, record the RequestLimits in the request's
    context for the headers, raise RateLimitExceeded on a breach. Any other configuration (default,
    decorated or blueprint limits, exemptions, meta limits, request filters, callbacks, conditional
    deductions, the in-memory fallback) takes flask-limiter's own check unchanged.
    """

    _parsed: dict[tuple[int, str], tuple[RuntimeLimit, ...]]

    def _application_limits_only(self) -> bool:
        manager = self.limit_manager
        groups = manager._application_limits
        return not (
            manager._default_limits
            or manager._decorated_limits
            or manager._blueprint_limits
            or manager._route_exemptions
            or manager._blueprint_exemptions
            or manager._endpoint_hints
            or self._meta_limits
            or self._request_filters
            or self._on_breach
            or self._in_memory_fallback_enabled
            or any(group.meta_limits or group.deduct_when or group.on_breach for group in groups)
        )

    def _runtime_limits(self, group: ApplicationLimit) -> tuple[RuntimeLimit, ...]:
        """What iterating the group yields, parsed once per limit string (e.g. "60/minute")."""
        provider = group.limit_provider
        text = provider() if callable(provider) else provider
        try:
            parsed = self._parsed
        except AttributeError:
            parsed = self._parsed = {}
        key = (id(group), text)
        found = parsed.get(key)
        if found is None:
            if len(parsed) > 1000:  # one entry per distinct limit string; never grows in practice
                parsed.clear()
            found = parsed[key] = tuple(group)
        return found

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if callable_name is not None or not in_middleware or not self._application_limits_only():
            return super()._check_request_limit(callable_name, in_middleware)
        endpoint = self.identify_request()
        if not endpoint or not (self.enabled and self.initialized) or endpoint.split(".")[-1] == "static":
            return None
        try:
            self._hit_application_limits(endpoint)
        except RateLimitExceeded:
            raise
        except Exception:
            if not self._swallow_errors:
                raise
            self.logger.exception("Failed to rate limit. Swallowing error")
        return None

    def _hit_application_limits(self, endpoint: str) -> None:
        limits = [
            lim for group in self.limit_manager._application_limits for lim in self._runtime_limits(group)
        ]
        method = request.method
        view_limits: list[RequestLimit] = []
        failed: list[RuntimeLimit] = []
        for lim in sorted(limits, key=lambda x: x.limit):
            if lim.is_exempt or lim.method_exempt:
                continue
            limit_key = lim.key_func()
            limit_scope = lim.scope_for(endpoint, method)
            if not (limit_key and limit_scope):
                self.logger.error(f"Skipping limit: {lim.limit}. Empty value found in parameters.")
                continue
            args = (
                [self._key_prefix, limit_key, limit_scope] if self._key_prefix else [limit_key, limit_scope]
            )
            view_limits.append(RequestLimit(self, lim.limit, args, False, lim.shared))
            if not self.limiter.hit(lim.limit, *args, cost=lim.deduction_amount):
                self.logger.info(
                    "ratelimit %s (%s) exceeded at endpoint: %s", lim.limit, limit_key, limit_scope
                )
                view_limits[-1].breached = True
                failed.append(lim)
                if self._fail_on_first_breach:
                    break
        context = self.context
        if failed:
            context.view_rate_limit = view_limits[-1]
        elif view_limits:
            explicit = [limit for limit in view_limits if not limit.shared]
            context.view_rate_limit = explicit[0] if explicit else view_limits[0]
        else:
            context.view_rate_limit = None
        context.view_rate_limits = view_limits
        if failed:
            raise RateLimitExceeded(min(failed, key=lambda x: x.limit))


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


def init_rate_limits(app: Flask, redis_url: str, key_prefix: str) -> ApplicationLimiter:
    """Attach a Limiter to `app` (one per app instance; the counters live in Redis)."""
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # we write the standard headers ourselves
    ours = redis_url.startswith(("redis://", "rediss://"))
    limiter = ApplicationLimiter(
        key_func=_org_key,
        application_limits=[_org_limit],
        application_limits_exempt_when=_not_authenticated,
        storage_uri=f"cliptext+{redis_url}" if ours else redis_url,
        storage_options={"auth_generation_key": generation_key(app.extensions["cliptext"])} if ours else {},
        strategy="fixed-window",
        key_prefix=f"{key_prefix}ratelimit",
        swallow_errors=False,
    )
    limiter.init_app(app)
    app.before_request(confirm_principal)  # after the limiter's hook: its hit read the auth generation

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded) -> Response:
        try:
            confirm_principal()  # the limiter's hook raised before the confirming one ran
        except ApiError as refused:  # the key was revoked meanwhile: 401, not 429
            return handle_api_error(refused)
        except BACKING_SERVICE_ERRORS as down:  # raised inside an error handler: Flask would make it a 500
            return handle_service_unavailable(down)
        limit = error.limit.limit
        return error_response(
            ErrorCode.RATE_LIMITED,
            f"Rate limit of {limit.amount} requests per {limit.get_expiry()} seconds exceeded",
            {"limit": str(limit), "requests_per_minute": limit.amount},
        )

    @app.after_request
    def rate_limit_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None or g.get("org") is None:  # not counted, or refused (confirm_principal)
            return response
        seconds = max(0, int(current.reset_at - time.time()))
        response.headers["RateLimit-Limit"] = str(current.limit.amount)
        response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
        response.headers["RateLimit-Reset"] = str(seconds)
        if response.status_code == 429 and current.breached:
            response.headers["Retry-After"] = str(max(1, seconds))
        return response

    return limiter
