"""Bearer API keys: issued once, stored only as SHA-256, recognised by a short visible prefix.

A key is `ct_` + 43 random url-safe characters (256 bits), so a plain SHA-256 is a sound hash (no
password stretching needed). Every failure is the same 401: nothing says which part was wrong.

Each process keeps its recent lookups (PrincipalCache). A revocation writes a fresh random value,
the auth generation, to Redis after its UPDATE; every request reads it in the round trip that
counts it against the rate limit (api.ratelimit), and a lookup cached under another generation is
done again before the request goes on (random, not a counter: a Redis that lost its data and
counted up again could land on a value a process still holds). So a key revoked anywhere is refused
at once everywhere, for no extra round trip. Rows changed behind the API's back (plain SQL) are seen within
`auth_cache_seconds`, when the entry expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from flask import current_app, g, request

from api.errors import ApiError
from api.models import ApiKey, Membership, Organization, User, utcnow
from api.state import AppState, state
from cliptext.errors import ErrorCode

KEY_PREFIX = "ct_"
VISIBLE_CHARS = 11  # "ct_" + 8 characters are shown in listings
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)  # at most one write per key per minute


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its membership, user and organization."""

    api_key: ApiKey
    membership: Membership
    user: User
    org: Organization


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def issue_key(membership: Membership) -> tuple[ApiKey, str]:
    """Create a key for `membership`; returns the row and the raw key (shown once, never stored)."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.create(membership=membership, key_hash=hash_key(raw), prefix=raw[:VISIBLE_CHARS])
    return row, raw


def generation_key(app_state: AppState) -> str:
    """The Redis key that every revocation sets to a new random value (see the module's docstring)."""
    return app_state.key("auth", "generation")


def _new_generation() -> str:
    """A value no earlier generation had: random, so it cannot come back after Redis loses its data."""
    return secrets.token_hex(16)


def current_generation(app_state: AppState) -> str:
    """The auth generation; a missing one (no revocation yet, or a Redis that lost its data) is first set
    to a fresh random value, so that no lookup is ever cached under a value that can come back."""
    redis = app_state.redis
    key = generation_key(app_state)
    value = redis.get(key)
    if value is None:
        redis.set(key, _new_generation(), nx=True)
        value = redis.get(key) or b""
    return value.decode()


def announce_revocation() -> None:
    """Tell every API process that a key was revoked (call it once the revocation is committed): a new
    auth generation in Redis, and this process's cached lookups dropped at once."""
    app_state = state()
    app_state.redis.set(generation_key(app_state), _new_generation())
    principal_cache().clear()


def _unauthorized() -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        "A valid API key is required",
        headers={"WWW-Authenticate": 'Bearer realm="cliptext"'},
    )


class PrincipalCache:
    """Recent key lookups of this process, by SHA-256 of the key, with the auth generation they were
    made under, for at most `ttl` seconds (0 = off).

    Saves the four-table lookup on most requests. An entry is only used once the request's rate-limit
    hit has shown that no revocation happened since (confirm_principal).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, str, Principal]] = {}

    def get(self, digest: str) -> tuple[str, Principal] | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[2]

    def put(self, digest: str, generation: str, principal: Principal) -> None:
        if self.ttl <= 0 or not generation:  # an unknown generation could match a stale entry later
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, generation, principal)

    def drop(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()


def principal_cache() -> PrincipalCache:
    """This app's cache (one per app instance, created on first use)."""
    cache = current_app.extensions.get("cliptext_principals")
    if cache is None:
        ttl = current_app.extensions["cliptext"].settings.auth_cache_seconds
        cache = current_app.extensions.setdefault("cliptext_principals", PrincipalCache(ttl))
    return cache


def authenticate(authorization: str | None) -> Principal:
    """Resolve an `Authorization: Bearer …` header to a Principal or raise 401.

    A cached principal still has to be confirmed (confirm_principal) before the view runs.
    """
    scheme, _, raw = (authorization or "").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        raise _unauthorized()
    digest = hash_key(raw)
    cache = principal_cache()
    cached = cache.get(digest)
    if cached is not None:
        generation, principal = cached
        g.auth_unconfirmed = (digest, generation)
        return principal
    # read before the lookup: a later revocation moves it on (no cache, no need to read it)
    generation = current_generation(state()) if cache.ttl > 0 else ""
    principal = _lookup(digest)
    cache.put(digest, generation, principal)
    return principal


def _lookup(digest: str) -> Principal:
    """The key's row (by its hash, the indexed column) with membership, user and organization."""
    row = (
        ApiKey.select(ApiKey, Membership, User, Organization)
        .join(Membership)
        .join(User)
        .switch(Membership)
        .join(Organization)
        .where(ApiKey.key_hash == digest)
        .first()
    )
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise _unauthorized()
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
    membership = row.membership
    return Principal(api_key=row, membership=membership, user=membership.user, org=membership.organization)


def is_public_endpoint() -> bool:
    """Health, the OpenAPI document/docs and the signed upload URL need no key."""
    if request.endpoint is None or request.routing_exception is not None:
        return True  # 404/405: answered without looking at credentials
    view = current_app.view_functions.get(request.endpoint)
    view_class = getattr(view, "view_class", None)
    if view_class is not None and getattr(view_class, "public", False):
        return True
    if request.blueprint in current_app.config.get("KEYLESS_BLUEPRINTS", ()):
        return True  # authorised otherwise (operator Basic auth, api.admin), not by an API key
    return request.endpoint.startswith(("api-docs.", "docs.")) or request.endpoint == "static"


def load_principal() -> None:
    """before_request hook: sets g.principal (and g.org for the rate limiter)."""
    g.principal = None
    g.org = None
    if request.method == "OPTIONS" or is_public_endpoint():
        return
    principal = authenticate(request.headers.get("Authorization"))
    g.principal = principal
    g.org = principal.org


def confirm_principal() -> None:
    """before_request hook after the rate limiter's (and first thing on a 429): a principal taken from
    the cache stands only if no key was revoked since it was looked up, else it is looked up again.

    The generation comes from the rate-limit hit's round trip (g.auth_generation, api.ratelimit); a
    request that made no hit reads it with a GET.
    """
    pending = g.pop("auth_unconfirmed", None)
    if pending is None:
        return
    digest, cached_generation = pending
    generation = g.get("auth_generation")
    if not generation:  # no hit this request, or the hit found no generation in Redis
        generation = current_generation(state())
    if generation == cached_generation:
        return
    g.principal = g.org = None  # nothing of the stale principal is used, the rate-limit headers neither
    cache = principal_cache()
    try:
        principal = _lookup(digest)  # the generation was read before this lookup, as authenticate() does
    except ApiError:
        cache.drop(digest)  # revoked: later requests with it go to the database, not this entry
        raise
    cache.put(digest, generation, principal)
    g.principal = principal
    g.org = principal.org


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        raise _unauthorized()
    return principal
