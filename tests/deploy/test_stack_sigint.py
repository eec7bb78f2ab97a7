"""`make run` started in the background of a script stops on SIGINT, as it does on Ctrl-C.

A background job of a non-interactive shell starts with SIGINT ignored, and Python then installs no
KeyboardInterrupt handler of its own: SIGINT to the stack's process group did nothing (SIGTERM worked).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from cliptext import local_services
from tests.deploy.test_make_run import REDIS_URL, ROOT, _env, _free_port
from tests.redis_db import flushed_redis


def _as_a_background_job() -> None:
    """What a non-interactive shell does to the job it starts with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_stack_started_with_sigint_ignored(tmp_path: Path) -> None:
    api_port, inference_port = _free_port(), _free_port()
    with flushed_redis(REDIS_URL):
        stack = subprocess.Popen(
            [sys.executable, "-m", "cliptext.stack"],
            env=_env(tmp_path, api_port, inference_port),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_as_a_background_job,
        )
        try:
            output = []
            while not any("Cliptext is ready" in line for line in output):
                line = stack.stdout.readline()  # the stack ends (and this reads "") if it cannot start
                assert line, "".join(output)
                output.append(line)
            children = psutil.Process(stack.pid).children(recursive=True)
            assert len(children) >= 3  # inference server, gunicorn and its workers, worker

            os.killpg(stack.pid, signal.SIGINT)
            assert stack.wait(60) == 0
            gone, alive = psutil.wait_procs(children, timeout=30)
            assert not alive, [p.cmdline() for p in alive]
            assert not local_services.answers("127.0.0.1", api_port)
            assert not local_services.answers("127.0.0.1", inference_port)
        finally:
            if stack.poll() is None:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait(10)
            stack.stdout.close()
