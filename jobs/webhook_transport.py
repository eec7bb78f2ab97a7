"""One webhook POST under one deadline: the whole answer's status line and headers within the timeout
(requests' own timeout bounds each read alone) and ended by their blank line (not by a hang-up), its
body never read, and, unless private targets are allowed, over a connection pinned to the address the
SSRF policy let through (ssrfguard)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from ssrfguard.requests import SafeAdapter
from ssrfguard.requests import Session as PinnedSession
from urllib3.connectionpool import HTTPConnectionPool

from cliptext.webhook_targets import PUBLIC_ONLY


class _Deadline:
    """Shuts down, `seconds` after it starts, every connection opened under it. requests' timeout bounds
    each connect and each read on its own, so a receiver that sent its answer a byte at a time held the
    delivery for as long as it liked (until RQ killed the job, unrecorded): this makes the timeout the
    whole exchange's. Each socket is watched through a duplicate of its own, so the one shut down can
    never be a descriptor the process has reused since."""

    def __init__(self, seconds: float):
        self.expired = False
        self._stopped = False
        self._watched: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._watched.append(sock.dup())
            if self.expired:
                self._shut(self._watched[-1])

    def stop(self) -> bool:
        """Stop the clock; whether the deadline had passed (and connections were shut down)."""
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            return self.expired

    def _expire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.expired = True
            for sock in self._watched:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed by the other side
            sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class _LastLineReader:
    """The response's stream, remembering the last line read: b"" when the stream had ended."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.last_line: bytes | None = None

    def readline(self, *args: Any) -> bytes:
        self.last_line = self.stream.readline(*args)
        return self.last_line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _WholeHeadersResponse(http.client.HTTPResponse):
    """An answer whose header section ends with the blank line HTTP requires. http.client takes the end
    of the stream for the end of the headers, so a receiver (or a proxy before it) that hung up after
    `HTTP/1.1 200 OK` counted as a delivery and the event was never sent again, where
    docs/webhooks.md asks for the status line and all the headers."""

    def begin(self) -> None:
        reader = _LastLineReader(self.fp)
        self.fp = reader
        try:
            super().begin()
        finally:
            if self.fp is reader:  # begin() may have closed it (fp None) on an answer without body
                self.fp = reader.stream
        if reader.last_line == b"":
            self.close()
            raise http.client.RemoteDisconnected("Remote end closed connection within the answer's headers")


def _watch_pools(manager: urllib3.PoolManager, deadline: _Deadline) -> None:
    """Make the pools `manager` builds report each new socket to `deadline`. The table is replaced,
    never changed in place: urllib3's default one is shared by every client in the process."""

    def watched(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
        class WatchedConnection(pool_class.ConnectionCls):
            response_class = _WholeHeadersResponse

            def _new_conn(self) -> socket.socket:
                sock = super()._new_conn()
                deadline.watch(sock)
                return sock

        return type(pool_class.__name__, (pool_class,), {"ConnectionCls": WatchedConnection})

    manager.pool_classes_by_scheme = {
        scheme: watched(pool_class) for scheme, pool_class in manager.pool_classes_by_scheme.items()
    }


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, its connections (an egress proxy's too) under one delivery's deadline."""

    def __init__(self, deadline: _Deadline):
        self.deadline = deadline  # before HTTPAdapter.__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager, self.deadline)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.PoolManager:
        new = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **kwargs)
        if new:
            _watch_pools(manager, self.deadline)
        return manager


class _PinnedDeadlineAdapter(SafeAdapter):
    """ssrfguard's pinned adapter, its connections under one delivery's deadline."""

    def __init__(self, deadline: _Deadline):
        self.deadline = deadline
        super().__init__(policy=PUBLIC_ONLY)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)  # the pinning pool classes first, then watched
        _watch_pools(self.poolmanager, self.deadline)


def send_event(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> requests.Response:
    """POST `body`; unless `allow_private`, over a connection to an address the policy let through,
    resolved once (no proxy: a proxy would resolve the name itself). The answer's status line and
    headers must arrive within `timeout` seconds in all; its body is never read (a receiver could
    send one without end, and the worker kept it all in memory). Raises SSRFGuardError when the name
    now resolves to a refused address, requests.RequestException when the call fails or is too slow."""
    with _Deadline(timeout) as deadline:
        if allow_private:
            session = requests.Session()
            adapter: HTTPAdapter = _DeadlineAdapter(deadline)
        else:
            session = PinnedSession(policy=PUBLIC_ONLY)
            adapter = _PinnedDeadlineAdapter(deadline)
            session.trust_env = False  # no proxy; the CA bundle the environment names still counts
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session:
            try:
                response = session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
                )
            except requests.RequestException:
                if deadline.stop():
                    raise requests.Timeout(f"no complete answer within {timeout:g} s") from None
                raise
            # cut off within its headers, an answer can look whole (http.client takes the end for theirs)
            cut_off = deadline.stop()
            response.close()
    if cut_off:
        raise requests.Timeout(f"no complete answer within {timeout:g} s")
    return response
