"""SIGTERM to a test run (make passes it on) runs the fixtures' teardown, as Ctrl-C does: the servers
the tests started are stopped, not left holding their ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SLOW_TEST = """
import pathlib, time, pytest

@pytest.fixture
def server():
    pathlib.Path("{marks}/started").touch()
    yield
    pathlib.Path("{marks}/stopped").touch()

def test_runs_long(server):
    time.sleep(60)
"""


def test_sigterm_runs_the_fixtures_teardown(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "test_slow.py").write_text(SLOW_TEST.format(marks=marks))
    output = tmp_path / "output.txt"
    with output.open("wb") as out:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "tests.conftest",
                str(tmp_path),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not (marks / "started").exists():
            assert time.monotonic() < deadline and run.poll() is None, output.read_text()
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert (marks / "stopped").exists(), output.read_text()
