"""The server's model runs happen on its few warm engine threads, never on gRPC's call threads."""

import contextvars
import threading

import pytest

from inference.engine_threads import EngineThreads

request = contextvars.ContextVar("request", default=None)


def test_every_step_of_a_generator_runs_on_an_engine_thread() -> None:
    threads = EngineThreads(2)
    seen = []

    def steps():
        for i in range(5):
            seen.append((threading.current_thread().name, request.get()))
            yield i

    request.set("req-1")
    assert list(threads.iterate(steps())) == [0, 1, 2, 3, 4]
    assert all(name.startswith("engine") for name, _ in seen)
    assert {ctx for _, ctx in seen} == {"req-1"}  # the caller's context goes along
    threads.shutdown()


def test_warm_runs_once_on_every_thread() -> None:
    threads = EngineThreads(3)
    warmed = []
    lock = threading.Lock()

    def run_once() -> None:
        with lock:
            warmed.append(threading.get_ident())

    threads.warm(run_once)
    assert len(warmed) == 3 and len(set(warmed)) == 3
    # later work lands on those warm threads only
    used = {threads.call(threading.get_ident) for _ in range(20)}
    assert used <= set(warmed)
    threads.shutdown()


def test_errors_reach_the_caller_and_the_generator_can_be_closed() -> None:
    threads = EngineThreads(1)

    def failing():
        yield 1
        raise ValueError("bad audio")

    items = threads.iterate(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad audio"):
        next(items)

    closed = []

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.append(threading.current_thread().name)

    gen = endless()
    assert next(threads.iterate(gen)) == 0
    gen.close()  # as the servicer does when a caller goes away
    assert closed
    threads.shutdown()
