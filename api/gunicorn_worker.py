"""gunicorn's gthread worker, its lingering closes moved off the event loop.

gunicorn 27 closes a connection whose answer came before its body was read (a 401 to an upload with a
bad key, past the 64 KiB it drains) "gracefully": it shuts its side, then reads what comes for up to 2 s,
until the client closes (RFC 9112 section 9.6: so that a reset does not cut the answer short). It does
so on the worker's event loop, the thread that accepts connections and hands kept-alive ones their next
request: for those 2 s no other request of the worker started, each such upload stalled every other
client of the worker, and a client sending them on purpose kept it frozen. Here the linger runs on a
few threads of its own; everything else is gunicorn's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gunicorn.workers import gthread

# closes lingering at once; more wait their turn (each ends within 2 s), never the event loop
LINGER_THREADS = 8
# lingering or waiting to, at most: past it a connection is closed at once (its socket, and a file
# descriptor, are held until then, outside gunicorn's worker_connections), so a flood of refused uploads
# cannot pile up descriptors until accept fails
MAX_LINGERING = 64


class ThreadWorker(gthread.ThreadWorker):
    """`worker_class = "api.gunicorn_worker.ThreadWorker"` (api/gunicorn_conf.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # built in the arbiter, its threads started at the first close: in the forked worker
        self.lingering = _Lingering(ThreadPoolExecutor(LINGER_THREADS, thread_name_prefix="linger"))

    def finish_request(self, conn: gthread.TConn, fs: Future) -> None:
        if "close" not in vars(conn):  # once per connection: a kept-alive one comes back here
            conn.close = self.lingering.closer(conn.close)
        super().finish_request(conn, fs)


class _Lingering:
    """The graceful closes under way or waiting, at most MAX_LINGERING."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._count = 0
        self._lock = threading.Lock()

    def closer(self, close: Callable[..., None]) -> Callable[..., None]:
        def close_off_the_loop(graceful: bool = False) -> None:
            if graceful and self._take():
                self._executor.submit(self._linger, close)
            else:
                close()

        return close_off_the_loop

    def _take(self) -> bool:
        with self._lock:
            if self._count >= MAX_LINGERING:
                return False
            self._count += 1
            return True

    def _linger(self, close: Callable[..., None]) -> None:
        try:
            close(True)
        finally:
            with self._lock:
                self._count -= 1
