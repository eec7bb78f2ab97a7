"""A throwaway redis-server on an ephemeral port, which a test may kill and start again.

The reliability tests restart Redis under a running stack; they must never touch the machine's own
Redis (port 6379), so they get one of their own (binary found as cliptext.local_services does).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from cliptext.local_services import redis_server_binary
from tests.jobs.stack import free_port


class RedisServer:
    """`start()` / `stop()` / `restart()` a redis-server bound to 127.0.0.1:`port` (no persistence).

    With `appendonly=True` the data survives a restart (the AOF in `workdir`), as a production Redis
    configured for durability would keep the queues.
    """

    def __init__(self, workdir: Path, appendonly: bool = True):
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        command += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        command += ["--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start:\n{(self.workdir / 'redis.log').read_text()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Redis writes its AOF and exits) or SIGKILL (a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
        self.process.wait(20)
        self.process = None

    def restart(self, kill: bool = False, down_seconds: float = 1.0) -> None:
        self.stop(kill=kill)
        time.sleep(down_seconds)
        self.start()
