"""Admission control for transcriptions: a few run at once, a bounded number wait, the rest are refused;
a watchdog that ends the calls whose client stopped sending, or stopped reading; and the decoding-window
budget of a split call.

Without it a burst of calls would share the CPU/GPU so thinly that every one of them times out.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cliptext.errors import ErrorCode
from inference.features import CHUNK_LENGTH
from inference.types import EngineError

T = TypeVar("T")
log = logging.getLogger(__name__)


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


def decoding_windows(seconds: float, channels: int = 1) -> int:
    """The 30 s windows decoding takes at least: each channel of a split call on its own, its last window
    padded to a whole one (0.2 s costs the encoder pass and the decoding of 30 s)."""
    per_channel = max(1, math.ceil(seconds / CHUNK_LENGTH - 1e-9))
    return max(1, channels) * per_channel


def window_budget(max_seconds: float) -> int:
    """The windows of the longest mono audio `max_seconds` allows: no split call may take more."""
    return decoding_windows(max_seconds)


def check_split_windows(channels: int, seconds: float | None, max_seconds: float) -> None:
    """Refuse (AUDIO_TOO_LONG) a split call that would decode more windows than the longest mono audio
    the limit allows: 32 channels of 0.2 s counted 6.4 s against the limit but cost 32 windows.
    `seconds` of each channel; None (not known yet) counts one window a channel."""
    windows = decoding_windows(seconds or 0.0, channels)
    budget = window_budget(max_seconds)
    if windows <= budget:
        return
    length = f"of {seconds:.1f} s " if seconds is not None else ""
    raise EngineError(
        ErrorCode.AUDIO_TOO_LONG,
        f"split: {channels} channels {length}take at least {windows} windows of {CHUNK_LENGTH} s to decode"
        f" (each channel on its own, at least one window each), over the {budget} windows"
        f" of the limit of {max_seconds:.0f} s",
    )


class UploadIdle(Exception):
    """The client sent nothing for the watchdog's idle_seconds: its call was cancelled."""


class ResponseIdle(Exception):
    """The client took no response for the watchdog's idle_seconds: its call was cancelled."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# below this average an upload is ended once it has run idle_seconds: a client trickling a byte per
# message would hold its place for good (64 kbit/s; our client and workers send megabytes a second)
MIN_UPLOAD_BYTES_PER_SECOND = 8 * 1024


@dataclass
class _Watched:
    call: Cancellable
    started: float
    last: float
    received: int = 0


class Sending:
    """One response on its way to the client: `expired` says why the watchdog cancelled the call."""

    def __init__(self, call: Cancellable, since: float):
        self.call = call
        self.since = since
        self.expired = ""


class UploadWatchdog:
    """Cancels a call whose client sent no message for `idle_seconds`, or sends so slowly that, after
    `idle_seconds`, it averages under `min_rate` bytes a second, while the server reads its stream;
    and one whose client has not taken a response for `idle_seconds` (`sending`).

    An admitted stream that never sends its config or its audio, or trickles it, or never reads its
    answers, would hold its place for good; one thread checks every call once a second (no timer per
    message: an upload may come in thousands of small chunks).
    """

    def __init__(
        self,
        idle_seconds: float,
        check_every: float = 1.0,
        min_rate: float = MIN_UPLOAD_BYTES_PER_SECOND,
    ):
        self.idle_seconds = idle_seconds
        self.min_rate = min_rate
        self._check_every = max(0.05, min(check_every, idle_seconds / 2))
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._ids = itertools.count()
        self._expired: dict[int, str] = {}
        self._sending: dict[int, Sending] = {}
        self._thread: threading.Thread | None = None

    def watch(
        self, messages: Iterator[T], call: Cancellable, size: Callable[[T], int] = lambda _: 0
    ) -> Iterator[T]:
        """`messages`, while each comes within idle_seconds of the one before (of the start) and
        their `size`s keep up with min_rate."""
        key = next(self._ids)
        now = time.monotonic()
        with self._lock:
            self._watched[key] = _Watched(call, now, now)
            self._start_thread()
        try:
            try:
                for message in messages:
                    self._touch(key, size(message))
                    yield message
            except Exception:  # the stream broke off: by our cancel, or by the client's
                if key not in self._expired:
                    raise
            if key in self._expired:
                raise UploadIdle(self._expired[key])
        finally:
            with self._lock:
                self._watched.pop(key, None)
                self._expired.pop(key, None)

    @contextmanager
    def sending(self, call: Cancellable) -> Iterator[Sending]:
        """Wrap the `yield` of a response: if the transport has not taken it (grpc has not asked for the
        next) after idle_seconds, the call is cancelled, and ResponseIdle raised should it resume.

        grpc's sync server sends what a servicer yields and waits, holding the call and its thread,
        until the client's flow-control window takes it; a client that stops reading never opens it,
        and only a cancel ends that wait (the generator is then closed at its yield).
        """
        key = next(self._ids)
        sending = Sending(call, time.monotonic())
        with self._lock:
            self._sending[key] = sending
            self._start_thread()
        try:
            yield sending
        finally:
            with self._lock:
                self._sending.pop(key, None)
        if sending.expired:
            raise ResponseIdle(sending.expired)

    def _touch(self, key: int, received: int) -> None:
        with self._lock:
            watched = self._watched.get(key)
            if watched is not None:
                watched.last = time.monotonic()
                watched.received += received

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="upload-watchdog", daemon=True)
            self._thread.start()

    def _why_ended(self, watched: _Watched, now: float) -> str | None:
        if now - watched.last > self.idle_seconds:
            return f"no message from the client for {self.idle_seconds:g} s"
        elapsed = now - watched.started
        if elapsed > self.idle_seconds and watched.received < self.min_rate * elapsed:
            return (
                f"the upload averaged {watched.received / elapsed:.0f} bytes/s after {elapsed:.0f} s, "
                f"under the minimum of {self.min_rate:.0f}"
            )
        return None

    def _run(self) -> None:
        while True:
            time.sleep(self._check_every)
            now = time.monotonic()
            ended: list[Cancellable] = []
            with self._lock:
                for key, watched in list(self._watched.items()):
                    reason = self._why_ended(watched, now)
                    if reason is not None:
                        del self._watched[key]
                        self._expired[key] = reason
                        ended.append(watched.call)
                for key, sending in list(self._sending.items()):
                    if now - sending.since > self.idle_seconds:
                        del self._sending[key]
                        sending.expired = f"no response taken by the client for {self.idle_seconds:g} s"
                        ended.append(sending.call)
            for call in ended:
                try:
                    call.cancel()
                except Exception:  # this thread must outlive any one call
                    log.exception("could not cancel an idle call")
