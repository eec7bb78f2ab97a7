"""Bearer API keys: issued once, stored only as SHA-256, recognised by a short visible prefix.

A key is `ct_` + 43 random url-safe characters (256 bits), so a plain SHA-256 is a sound hash (no
password stretching needed). Every failure is the same 401: nothing says which part was wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from flask import current_app, g, has_app_context, request

from api.errors import ApiError
from api.models import ApiKey, Membership, Organization, User, utcnow
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


def revoke_key(key_public_id: str) -> bool:
    revoked = bool(
        ApiKey.update(revoked_at=utcnow())
        .where((ApiKey.public_id == key_public_id) & ApiKey.revoked_at.is_null())
        .execute()
    )
    if revoked and has_app_context():
        principal_cache().clear()
    return revoked


def _unauthorized() -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        "A valid API key is required",
        headers={"WWW-Authenticate": 'Bearer realm="cliptext"'},
    )


class PrincipalCache:
    """Recent key lookups of this process, by SHA-256 of the key, for `ttl` seconds (0 = off).

    Saves the four-table lookup on most requests; a key revoked by another process keeps working here
    for at most `ttl` seconds (revocations in this process clear it at once).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, principal)

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
    """Resolve an `Authorization: Bearer …` header to a Principal or raise 401."""
    scheme, _, raw = (authorization or "").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        raise _unauthorized()
    digest = hash_key(raw)
    cache = principal_cache()
    cached = cache.get(digest)
    if cached is not None:
        return cached
    principal = _lookup(digest)
    cache.put(digest, principal)
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
    return request.endpoint.startswith("api-docs.") or request.endpoint == "static"


def load_principal() -> None:
    """before_request hook: sets g.principal (and g.org for the rate limiter)."""
    g.principal = None
    g.org = None
    if request.method == "OPTIONS" or is_public_endpoint():
        return
    principal = authenticate(request.headers.get("Authorization"))
    g.principal = principal
    g.org = principal.org


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        raise _unauthorized()
    return principal
