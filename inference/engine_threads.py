"""`EngineThreads`: the few long-lived threads every model run of the server happens on.

Why: on CUDA, ONNX Runtime's first run of a session at each new input shape is slow on every thread
that makes it (on an H200, about 36 ms per new decoder step shape and 70-120 ms per new prompt length,
again on a second thread; bench/cuda_shapes.py), and the decoder's shape changes at every step. So a
new thread took 5 to 7 s to decode a 60 s clip, and gRPC hands each call to whichever pool thread is
free: four concurrent calls on a fresh server ran at 11 audio s/s in total against 100 for one warm
stream. With the work on a fixed set of threads, each warmed once at startup (about 38 s per thread,
not overlapping), no call pays that cost.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


class EngineThreads:
    """Runs calls and generator steps on `size` threads (size = the server's max_concurrent)."""

    def __init__(self, size: int):
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="engine")

    def warm(self, run_once: Callable[[], None]) -> float:
        """`run_once()` on every thread, each on its own (a barrier keeps one thread from taking two);
        seconds it took."""
        started = time.monotonic()
        barrier = threading.Barrier(self.size)

        def on_its_own_thread() -> None:
            barrier.wait()
            run_once()

        for future in [self._pool.submit(on_its_own_thread) for _ in range(self.size)]:
            future.result()
        return time.monotonic() - started

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on an engine thread, in the caller's context; its exception is raised here."""
        return self._pool.submit(contextvars.copy_context().run, fn, *args, **kwargs).result()

    def iterate(self, items: Iterator[T]) -> Iterator[T]:
        """`items`, each produced on an engine thread (a generator may resume on any thread, one step
        at a time: each step is awaited here before the next is asked for)."""
        while True:
            item = self.call(next, items, _END)
            if item is _END:
                return
            yield item

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
