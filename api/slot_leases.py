"""Leases on the concurrent-upload slots of the multipart uploads this process is receiving.

A multipart upload's slot is a row that counts against the plan's cap until it expires. It used to be
reserved for an hour, like a presigned URL, and freed at the request's end: an API process that died
mid-upload (SIGKILL after a deploy's grace, a lost machine) left it for that hour, so a Free
organization (one concurrent upload) could upload nothing meanwhile. Now the slot is reserved for
`lease` seconds and renewed by this process, every quarter lease, for as long as the request runs (its
body coming in, its bytes stored and probed): one whose process is gone frees itself within the lease.

An Idempotency-Key's "in progress" marker in Redis (api.services.idempotency) is held the same way: set
for `lease` seconds and renewed by the same thread while its request runs, where it had a fixed 300 s
that a slower request outlived (a retry with the key then ran the request a second time).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import redis

from api.db import db
from api.models import Upload, UploadStatus, utcnow

log = logging.getLogger(__name__)

# the key's expiry pushed back only while it holds the holder's value: a marker replaced since (the
# request's answer stored, or the key deleted) is left alone
_RENEW_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class SlotLeases:
    """The slots (upload row ids) and Redis keys held by this process's requests, and the one thread
    renewing them."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease = dt.timedelta(seconds=lease_seconds)
        self._held: set[int] = set()
        self._keys: set[tuple[redis.Redis, str, str]] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    @property
    def lease_ms(self) -> int:
        """The lease in milliseconds, as a Redis key's expiry (PX) takes it."""
        return int(self.lease.total_seconds() * 1000)

    def expiry(self) -> dt.datetime:
        """When a slot taken or renewed now expires unless renewed again."""
        return utcnow() + self.lease

    def hold(self, upload_id: int) -> None:
        with self._lock:
            self._held.add(upload_id)
            self._start_renewer()

    def let_go(self, upload_id: int) -> None:
        with self._lock:
            self._held.discard(upload_id)

    def hold_key(self, conn: redis.Redis, key: str, value: str) -> None:
        """Keep `key` (set with a PX of `lease_ms`) from expiring while it holds `value`, until
        let_go_key."""
        with self._lock:
            self._keys.add((conn, key, value))
            self._start_renewer()

    def let_go_key(self, conn: redis.Redis, key: str, value: str) -> None:
        with self._lock:
            self._keys.discard((conn, key, value))

    def _start_renewer(self) -> None:
        # started at the first hold, in each process: a thread does not survive gunicorn's fork
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_forever, name="slot-leases", daemon=True)
            self._renewer.start()

    def renew(self) -> int:
        """Push back the expiry of every slot held; the number renewed."""
        with self._lock:
            held = list(self._held)
        if not held:
            return 0
        with db.connection_context():
            return (
                Upload.update(expires_at=self.expiry())
                .where(Upload.id.in_(held) & (Upload.status == UploadStatus.UPLOADED))
                .execute()
            )

    def renew_keys(self) -> int:
        """Push back the expiry of every key held that still holds its holder's value; the number
        renewed."""
        with self._lock:
            held = list(self._keys)
        return sum(conn.eval(_RENEW_IF_OURS, 1, key, value, self.lease_ms) for conn, key, value in held)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease.total_seconds() / 4)
            # the keys first: a database slow to answer (a connect that hangs) must not let them lapse
            try:
                self.renew_keys()
            except Exception as error:  # Redis away for a moment: the next round tries again
                log.warning("could not renew the leases of Redis keys: %s", error)
            try:
                self.renew()
            except Exception as error:  # the database away for a moment: the next round tries again
                log.warning("could not renew upload slot leases: %s", error)
