"""A Redis database of a test's own: empty when the test starts, emptied again when it ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def flushed_redis(url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    try:
        yield conn
    finally:
        conn.flushdb()
        conn.close()
