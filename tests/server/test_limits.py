"""Admission: N run, M wait in arrival order, the rest are refused; leaving waiters free their place."""

from __future__ import annotations

import threading
import time

import pytest

from inference.limits import Abandoned, Admission, QueueFull


def test_excess_calls_wait_then_are_refused() -> None:
    admission = Admission(max_concurrent=1, max_queue=1)
    with admission.admit() as first, admission.admit():
        with pytest.raises(QueueFull), admission.admit():
            pass
        with first.run():
            assert admission.running == 1
    assert admission.admitted == 0 and admission.running == 0
    with admission.admit():  # the places are free again
        pass


def test_slots_go_in_arrival_order() -> None:
    admission = Admission(max_concurrent=1, max_queue=3)
    order: list[int] = []
    release = threading.Event()

    def worker(n: int) -> None:
        with admission.admit() as ticket, ticket.run():
            order.append(n)
            if n == 0:
                release.wait(5)

    threads = []
    for n in range(4):
        thread = threading.Thread(target=worker, args=(n,))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # arrive one after the other
    assert order == [0]
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_an_abandoned_waiter_leaves_the_queue() -> None:
    admission = Admission(max_concurrent=1, max_queue=2, poll_seconds=0.01)
    gone = threading.Event()
    with admission.admit() as holder, holder.run():
        outcome: list[str] = []

        def waiter() -> None:
            try:
                with admission.admit() as ticket, ticket.run(lambda: not gone.is_set()):
                    outcome.append("ran")
            except Abandoned:
                outcome.append("abandoned")

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.05)
        gone.set()
        thread.join(5)
        assert outcome == ["abandoned"]
        assert admission.admitted == 1
    with admission.admit() as ticket, ticket.run():  # nobody left blocking the head of the queue
        assert admission.running == 1
