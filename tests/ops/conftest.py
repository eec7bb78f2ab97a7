"""Fixtures of the operations tests: one real stack (tests/jobs/stack.py) with the operator settings on.

Its own Redis database (9), operator credentials (rq-dashboard), Prometheus multiprocess mode in the
API, JSON logs, and one worker for the session exporting its metrics on a free port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.stack import Proc, Stack, free_port, running

REDIS_URL = os.environ.get("CLIPTEXT_TEST_OPS_REDIS", "redis://127.0.0.1:6379/9")
ADMIN = ("operator", "ops-test-password")


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ops_stack")
    (tmp / "prometheus").mkdir()
    with running(
        tmp,
        model_dir,
        redis_url=REDIS_URL,
        CLIPTEXT_ADMIN_USER=ADMIN[0],
        CLIPTEXT_ADMIN_PASSWORD=ADMIN[1],
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "prometheus"),
        CLIPTEXT_OPENAI_WAIT_SECONDS="120",
        CLIPTEXT_LOG_FORMAT="json",
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def worker_metrics_port() -> int:
    return free_port()


@pytest.fixture
def worker(ops_stack: Stack, worker_metrics_port: int) -> Proc:
    """The session's one worker (started on first use, restarted if a test killed it)."""
    alive = [w for w in ops_stack.workers if w.alive()]
    if alive:
        return alive[0]
    return ops_stack.start_worker(CLIPTEXT_WORKER_METRICS_PORT=str(worker_metrics_port))
