"""Fixtures of the jobs tests: the whole stack as REAL processes (tests/jobs/stack.py).

One stack per session: a tmp SQLite database and data folder, Redis database 5 (flushed at the start
and after each test), the inference server and the API on ephemeral ports. Workers are started by
each test (`stack.start_worker()`) and all stopped when it ends; a test that stops the inference
server gets it back afterwards. Retry intervals, heartbeats and maintenance are short (env), so
recovery and retries take seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.stack import Stack, running

__all__ = ["Stack"]


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("jobs_stack"), model_dir) as stack:
        yield stack


@pytest.fixture
def stack(session_stack: Stack) -> Iterator[Stack]:
    """The session's stack; this test's workers are stopped after it, Redis jobs flushed."""
    yield session_stack
    session_stack.reset_after_test()
    for key in session_stack.redis.scan_iter("rq:*"):
        session_stack.redis.delete(key)
