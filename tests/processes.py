"""Stopping the servers and workers that tests start as real processes."""

from __future__ import annotations

import subprocess


def stop(*processes: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM them all (they shut down side by side), then SIGKILL whichever is still up after `timeout`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
