"""What one app instance holds besides Flask itself: settings, Redis, storage, URL signer, the leases of
the upload slots and Idempotency-Key markers its requests hold.

Kept on `app.extensions["cliptext"]` (never module globals) so two app instances in one process, as the
tests make, do not share anything but the real Redis and database.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from itsdangerous import URLSafeTimedSerializer

from api.slot_leases import SlotLeases
from api.storage import Storage
from cliptext.settings import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    redis: redis.Redis
    storage: Storage
    signer: URLSafeTimedSerializer
    redis_prefix: str  # prepended to every key the API itself writes (tests use one per test)
    queue_name: str
    slot_leases: SlotLeases

    def key(self, *parts: str) -> str:
        return self.redis_prefix + ":".join(parts)


def state() -> AppState:
    """The state of the app handling the current request / CLI command."""
    return current_app.extensions["cliptext"]
