"""Admission control for transcriptions: a few run at once, a bounded number wait, the rest are refused.

Without it a burst of calls would share the CPU/GPU so thinly that every one of them times out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class QueueFull(Exception):
    """Every running slot and every waiting place is taken."""


class Abandoned(Exception):
    """The caller went away (cancelled, deadline) while waiting for a slot."""


class Admission:
    """`max_concurrent` calls run at once; up to `max_queue` more wait (uploading or queued).

    A call is admitted first (`admit()`, refused at once when full), then asks for a running slot
    (`Ticket.run()`); slots go to waiters in arrival order.
    """

    def __init__(self, max_concurrent: int, max_queue: int, poll_seconds: float = 0.1):
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._poll = poll_seconds
        self._cond = threading.Condition()
        self._admitted = 0  # running + waiting
        self._running = 0
        self._waiting: deque[object] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Take a place (running or waiting) or raise QueueFull at once; the place is freed on exit."""
        with self._cond:
            if self._admitted >= self.max_concurrent + self.max_queue:
                waiting = self._admitted - self._running
                raise QueueFull(f"{self._running} transcriptions running and {waiting} waiting")
            self._admitted += 1
        try:
            yield Ticket(self)
        finally:
            with self._cond:
                self._admitted -= 1

    @contextmanager
    def _slot(self, is_active: Callable[[], bool]) -> Iterator[None]:
        turn = object()
        with self._cond:
            self._waiting.append(turn)
            try:
                while self._running >= self.max_concurrent or self._waiting[0] is not turn:
                    if not is_active():
                        raise Abandoned("the caller left while waiting for a slot")
                    self._cond.wait(self._poll)
            finally:
                self._waiting.remove(turn)
                self._cond.notify_all()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


class Ticket:
    """An admitted call."""

    def __init__(self, admission: Admission):
        self._admission = admission

    def run(self, is_active: Callable[[], bool] = lambda: True):
        """Context manager: wait in order for a running slot while `is_active()` (else Abandoned)."""
        return self._admission._slot(is_active)
