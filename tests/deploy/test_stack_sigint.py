"""`make run` started in the background of a script stops on SIGINT, as it does on Ctrl-C.

A background job of a non-interactive shell starts with SIGINT ignored, and Python then installs no
KeyboardInterrupt handler of its own: SIGINT to the stack's process group did nothing (SIGTERM worked).
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.deploy.test_make_run import REDIS_URL, _free_port, assert_stops_whole, started_stack
from tests.redis_db import flushed_redis


def _as_a_background_job() -> None:
    """What a non-interactive shell does to the job it starts with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_stack_started_with_sigint_ignored(tmp_path: Path) -> None:
    api_port, inference_port = _free_port(), _free_port()
    with (
        flushed_redis(REDIS_URL),
        started_stack(tmp_path, api_port, inference_port, preexec_fn=_as_a_background_job) as stack,
    ):
        output = []
        while not any("Cliptext is ready" in line for line in output):
            line = stack.stdout.readline()  # the stack ends (and this reads "") if it cannot start
            assert line, "".join(output)
            output.append(line)
        assert_stops_whole(stack, signal.SIGINT, (api_port, inference_port))
