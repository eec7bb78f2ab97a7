"""api/gunicorn_conf.py gives every gunicorn started with it production's worker settings.

The image's own command, compose's api and rq-dashboard services and `make run` all start gunicorn with
`-c python:api.gunicorn_conf`: gthread workers with 4 threads, a 300 s request timeout and a 30 s
graceful timeout must come from there (the image's command once ran one sync worker with a 30 s timeout,
which cut slow uploads and let one slow client stall the health check). Flags on the command line (as
bench/load.py gives) still win. Real gunicorn processes: `--print-config` resolves the configuration
exactly as a start does, and one test starts the image's command and serves requests.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLIPTEXT_TEST_ADMIN_REDIS", "redis://127.0.0.1:6379/12")
PRODUCTION = {
    "worker_class": "api.gunicorn_worker.ThreadWorker",
    "threads": "4",
    "timeout": "300",
    "graceful_timeout": "30",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A process environment of its own: SQLite and a data folder in tmp_path, no inherited gunicorn knobs."""
    # no PROMETHEUS_MULTIPROC_DIR at all: set, even empty, prometheus_client writes its files to the cwd
    dropped = {"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        CLIPTEXT_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
        REDIS_URL=REDIS_URL,
        CLIPTEXT_SECRET_KEY=secrets.token_urlsafe(32),
        CLIPTEXT_LOG_FORMAT="text",
    )
    env.update(extra)
    return env


def resolved(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """gunicorn's own resolution of `argv` (gunicorn OPTIONS... APP): `--print-config`, name -> value."""
    assert argv[0] == "gunicorn", argv
    command = [sys.executable, "-m", "gunicorn", "--print-config", *argv[1:]]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.M))


def image_command() -> list[str]:
    """The app target's CMD in the Dockerfile."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = dockerfile.split("AS app\n", 1)[1].split("\nFROM ", 1)[0]
    return ast.literal_eval(re.search(r"^CMD (\[.*\])$", stage, re.M).group(1))


def compose_command(service: str) -> list[str]:
    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def test_the_config_file_sets_production_workers(tmp_path: Path) -> None:
    """Nothing but the config file: the image's command as `docker run cliptext-app` runs it."""
    argv = image_command()
    assert "--config" in argv and "python:api.gunicorn_conf" in argv, argv
    got = resolved(argv, app_env(tmp_path))
    assert {k: got[k] for k in PRODUCTION} == PRODUCTION
    assert got["workers"] == "1"  # WEB_CONCURRENCY unset
    assert resolved(argv, app_env(tmp_path, WEB_CONCURRENCY="3"))["workers"] == "3"


@pytest.mark.parametrize("service", ["api", "rq-dashboard"])
def test_compose_services_get_the_same_settings(tmp_path: Path, service: str) -> None:
    argv = compose_command(service)
    env = app_env(tmp_path, WEB_CONCURRENCY="4", CLIPTEXT_ADMIN_USER="op", CLIPTEXT_ADMIN_PASSWORD="pw")
    got = resolved([part.replace("0.0.0.0", "127.0.0.1") for part in argv], env)
    assert {k: got[k] for k in PRODUCTION} == PRODUCTION
    assert got["workers"] == ("4" if service == "api" else "1")


def test_command_line_flags_win_over_the_config_file(tmp_path: Path) -> None:
    """gunicorn reads the config file first, then the command line: bench/load.py's flags stand."""
    argv = ["gunicorn", "--config", "python:api.gunicorn_conf", "--bind", "127.0.0.1:1"]
    argv += ["--workers", "2", "--worker-class", "sync", "--threads", "1", "--timeout", "7"]
    argv += ["--graceful-timeout", "3", "api:create_app()"]
    got = resolved(argv, app_env(tmp_path, WEB_CONCURRENCY="5"))
    assert (got["worker_class"], got["threads"], got["timeout"], got["graceful_timeout"]) == (
        "sync",
        "1",
        "7",
        "3",
    )
    assert got["workers"] == "2"
    bench = ["gunicorn", "--config", "python:api.gunicorn_conf", "--bind", "127.0.0.1:1", "--workers", "3"]
    bench += ["--threads", "8", "--keep-alive", "10", "api:create_app()"]
    got = resolved(bench, app_env(tmp_path))
    assert (got["workers"], got["threads"], got["keepalive"]) == ("3", "8", "10")
    assert got["timeout"] == "300"  # what the command line leaves alone still comes from the file


def test_the_image_command_answers_health_checks_while_a_client_stalls(tmp_path: Path) -> None:
    """One client sending its request slowly held the image's only (sync) worker: compose's 5 s health
    check then failed. Under gthread it holds one thread and the health check still answers."""
    port = free_port()
    argv = [part.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for part in image_command()]
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *argv[1:]],
        cwd=ROOT,
        env=app_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    slow = None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/transcriptions HTTP/1.1\r\nHost: x\r\n")  # and then nothing, for now
        time.sleep(1)
        started = time.monotonic()
        answer = requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        assert answer.status_code == 200 and time.monotonic() - started < 5
        log_text = (tmp_path / "gunicorn.log").read_text()
        assert "Using worker: api.gunicorn_worker.ThreadWorker" in log_text, log_text
    finally:
        if slow is not None:
            slow.close()
        stop(server)
        log.close()


def test_no_control_socket_at_the_per_user_path(tmp_path: Path) -> None:
    """gunicorn 27 opened a control socket at $XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl: one path per
    user, fought over by two stacks, or a stack and the tests' gunicorn. We never use it."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in app_env(tmp_path, HOME=str(home)).items() if k != "XDG_RUNTIME_DIR"}
    argv = [part.replace("0.0.0.0:8000", f"127.0.0.1:{free_port()}") for part in image_command()]
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        # at debug level the master logs one line either way, where it starts (or skips) the socket
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--log-level", "debug", *argv[1:]],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "Control socket" not in log_path.read_text():
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        finally:
            stop(server)
    log_text = log_path.read_text()
    assert "Control socket disabled" in log_text and "Control socket listening" not in log_text, log_text
    assert not (home / ".gunicorn").exists()
