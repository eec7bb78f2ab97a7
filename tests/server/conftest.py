"""Fixtures of the inference server tests: REAL `python -m inference.server` processes on ephemeral ports.

Each server loads the real exported tiny.en model; tests talk to it over gRPC and read its log file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference.stubs import SERVICE_NAME
from tests.media import AUDIO_DIR
from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def call_lines(self) -> list[str]:
        """The one-line-per-call log records."""
        return [line for line in self.log().splitlines() if "transcribe peer=" in line]

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the server log:\n{self.log()}")

    def stop(self) -> int:
        stop(self.process)
        return self.process.returncode


def health_status(addr: str, service: str = "", timeout: float = 2.0) -> int:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def wait_serving(server: ServerProcess, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if health_status(server.addr, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not SERVING after {timeout} s:\n{server.log()}")


@pytest.fixture(scope="session")
def reference_text() -> dict[str, str]:
    """What faster-whisper (fp32, beam 5, in .venv-ref) prints for the jfk clips: our engine must match."""
    clips = [AUDIO_DIR / "jfk.flac", AUDIO_DIR / "jfk.mp3"]
    done = subprocess.run(
        [str(ROOT / ".venv-ref/bin/python"), str(ROOT / "tests/reference/fw_reference.py"),
         "--compute-type", "float32", "--options", '{"beam_size": 5}', *map(str, clips)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    files = json.loads(done.stdout)["files"]
    return {
        Path(name).name: "".join(s["text"] for s in result["segments"]).strip()
        for name, result in files.items()
    }


@pytest.fixture(scope="session")
def launch(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server with extra flags; `wait=False` returns before it is SERVING. All stopped at the end."""
    started: list[ServerProcess] = []

    def start(*flags: str, wait: bool = True) -> ServerProcess:
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CLIPTEXT_DATA_DIR": str(log_path.parent)}
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inference.server",
                    "--addr",
                    "127.0.0.1:0",
                    "--model-dir",
                    str(model_dir),
                    "--precision",
                    "fp32",
                    "--threads",
                    "1",
                    *flags,
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(process, 0, log_path)
        started.append(server)
        server.port = int(server.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)", START_TIMEOUT).group(1))
        if wait:
            wait_serving(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(launch: Callable[..., ServerProcess]) -> ServerProcess:
    """The shared server: 4 at once, 4 waiting, 4 MiB and 40 s of audio per request."""
    return launch(
        "--max-concurrent", "4", "--max-queue", "4", "--max-audio-bytes", str(4 * 1024 * 1024),
        "--max-audio-seconds", "40",
    )  # fmt: skip
