"""A process that cannot start says why in one line naming what to fix, never a traceback: a port in use
(the inference server's address, either metrics exporter), a Redis that does not answer when a worker
starts, a model directory missing or incomplete. A PostgreSQL host that drops packets fails a connection
after a bounded wait instead of holding the start, and CLIPTEXT_LOG_LEVEL=DEBUG never writes the S3
access key id or a signature (an operator's review)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from api.db import make_database

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLIPTEXT_TEST_JOBS_REDIS", "redis://127.0.0.1:6379/5")
INFERENCE_SERVER = [sys.executable, "-m", "inference.server"]
WORKER = [sys.executable, "-m", "jobs.worker", "--burst"]


def run(command: list[str], tmp_path: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """`command` run to its end from the checkout, with a data folder of its own and `env` on top."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CLIPTEXT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cliptext.db'}",
        "REDIS_URL": REDIS_URL,
        **env,
    }
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def only_line(done: subprocess.CompletedProcess) -> str:
    """The one line the process wrote to stderr (and no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process already listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def blackholed_port() -> Iterator[int]:
    """A port whose connections never complete, as a host that drops packets: its listener's backlog is
    full and never accepted from, so the kernel drops every new SYN and the client waits for an answer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize(("given_as", "named"), [("flag", "--addr"), ("environment", "INFERENCE_ADDR")])
def test_an_inference_address_in_use_is_named(tmp_path, busy_port, given_as, named):
    """grpc's bind failure was a RuntimeError traceback that named no setting."""
    addr = f"127.0.0.1:{busy_port}"
    if given_as == "flag":
        done = run([*INFERENCE_SERVER, "--addr", addr], tmp_path)
    else:
        done = run(INFERENCE_SERVER, tmp_path, INFERENCE_ADDR=addr)
    assert done.returncode == 2
    assert only_line(done) == (
        f"configuration error: {named} must be a host:port this host can listen on, "
        f"got '{addr}' (Address already in use)"
    )


@pytest.mark.parametrize(
    ("process", "variable"),
    [
        ([*INFERENCE_SERVER, "--addr", "127.0.0.1:0"], "CLIPTEXT_INFERENCE_METRICS_PORT"),
        (WORKER, "CLIPTEXT_WORKER_METRICS_PORT"),
    ],
    ids=["inference server", "worker"],
)
def test_a_metrics_port_in_use_is_named(tmp_path, busy_port, process, variable):
    done = run(process, tmp_path, **{variable: str(busy_port)})
    assert done.returncode == 2
    assert only_line(done) == (
        f"configuration error: {variable} must be a port free on this host, got {busy_port} "
        "(Address already in use)"
    )


def test_inference_server_flags_are_read_before_the_metrics_port_is_taken(tmp_path, busy_port):
    """--help and a mistyped flag answered 'metrics port in use' when another server held the port: the
    exporter opened before argparse read the command line."""
    env = {"CLIPTEXT_INFERENCE_METRICS_PORT": str(busy_port)}
    helped = run([*INFERENCE_SERVER, "--help"], tmp_path, **env)
    assert helped.returncode == 0, helped.stderr
    assert "usage: python -m inference.server" in helped.stdout
    mistyped = run([*INFERENCE_SERVER, "--adr", "127.0.0.1:0"], tmp_path, **env)
    assert mistyped.returncode == 2
    assert "unrecognized arguments: --adr" in mistyped.stderr
    assert "metrics" not in mistyped.stderr


def test_a_worker_whose_redis_does_not_answer_at_start_says_so(tmp_path):
    """It was a traceback of redis-py's, not even a JSON log line, from inside RQ's Worker()."""
    done = run(WORKER, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert done.returncode == 1
    entry = json.loads(only_line(done))
    assert entry["level"] == "ERROR"
    assert entry["msg"].startswith("cannot reach Redis at REDIS_URL: ")
    assert "127.0.0.1:1" in entry["msg"]


def _incomplete_copy(model_dir: Path, target: Path) -> Path:
    """The export without its encoder: a download or copy that stopped half way."""
    target.mkdir()
    for file in model_dir.iterdir():
        if file.is_file() and not file.name.startswith("encoder."):
            (target / file.name).symlink_to(file)
    return target


@pytest.mark.parametrize("what", ["missing", "incomplete"])
@pytest.mark.parametrize(
    ("given_as", "named"), [("flag", "--model-dir"), ("environment", "CLIPTEXT_MODEL_DIR")]
)
def test_a_model_directory_that_cannot_load_is_named(tmp_path, model_dir, what, given_as, named):
    """The line named the path only: whether to fix a flag, a variable or the export was left to guess."""
    path = tmp_path / "model" if what == "missing" else _incomplete_copy(model_dir, tmp_path / "model")
    args = [*INFERENCE_SERVER, "--addr", "127.0.0.1:0", "--precision", "fp32", "--threads", "1"]
    if given_as == "flag":
        done = run([*args, "--model-dir", str(path)], tmp_path, CLIPTEXT_LOG_FORMAT="text")
    else:
        done = run(args, tmp_path, CLIPTEXT_LOG_FORMAT="text", CLIPTEXT_MODEL_DIR=str(path))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert f"cannot load the model at {named}: {path}" in errors[0]
    if what == "incomplete":
        assert "encoder.fp32.onnx" in errors[0]


def test_postgres_connections_wait_a_bounded_time_unless_the_url_says_otherwise():
    url = "postgresql://cliptext@db.internal:5432/cliptext"
    assert make_database(url).connect_params["connect_timeout"] == 10  # seconds
    assert make_database(f"{url}?connect_timeout=3").connect_params["connect_timeout"] == 3


def test_a_database_url_of_another_kind_is_refused_by_name():
    """make_database handed any other scheme to playhouse, which connected to MySQL or CockroachDB that
    no migration was written for; settings refuse them at start, and so does this."""
    with pytest.raises(ValueError, match="not mysql"):
        make_database("mysql://cliptext@db.internal/cliptext")


def test_a_database_host_that_drops_packets_fails_the_start(tmp_path, blackholed_port):
    """Without a connect timeout `db upgrade` (compose's `migrate`) waited on the kernel's SYN retries,
    minutes, and every API request on a fresh connection as long: now it gives up after 10 s."""
    done = run(
        [sys.executable, "-m", "flask", "--app", "api", "db", "upgrade"],
        tmp_path,
        timeout=60,
        DATABASE_URL=f"postgresql://cliptext@127.0.0.1:{blackholed_port}/cliptext",
    )
    assert done.returncode == 1
    assert only_line(done).startswith("Error: cannot open the database at DATABASE_URL: ")
    assert "timeout expired" in done.stderr


ACCESS_KEY_ID = "AKIACLIPTEXTTESTKEY1"
S3_AT_DEBUG = """
import logging
from api.storage import open_storage
from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings

settings = Settings.from_env()
configure_logging(settings)
logging.getLogger("cliptext.check").debug("debug lines are written")
storage = open_storage(settings.storage_url, settings.storage_public_endpoint)
print(storage.presigned_put("uploads/upl_check", "audio/wav", 1000, 600)[0])
try:
    storage.size("uploads/upl_check")  # a signed request, to an endpoint that refuses the connection
except Exception as error:
    print(type(error).__name__)
"""


def test_debug_logs_carry_no_s3_credentials_or_signatures(tmp_path):
    """At CLIPTEXT_LOG_LEVEL=DEBUG botocore logged every canonical request and signature, the access key
    id in each; its loggers and those under it now stay at INFO."""
    done = run(
        [sys.executable, "-c", S3_AT_DEBUG],
        tmp_path,
        CLIPTEXT_LOG_LEVEL="DEBUG",
        STORAGE_URL="s3://cliptext/uploads",
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY="cliptext-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL="http://127.0.0.1:1",  # nothing listens on port 1
        AWS_MAX_ATTEMPTS="1",
    )
    assert done.returncode == 0, done.stderr
    url, error = done.stdout.split()
    assert error == "EndpointConnectionError"
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    assert '"msg": "debug lines are written"' in done.stderr  # DEBUG is on
    assert ACCESS_KEY_ID not in done.stderr
    assert signature not in done.stderr
    assert "Signature" not in done.stderr


SQL_AT_DEBUG = """
import logging
from api.db import make_database
from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings

settings = Settings.from_env()
configure_logging(settings)
logging.getLogger("cliptext.check").debug("debug lines are written")
database = make_database(settings.database_url)
database.execute_sql("CREATE TABLE segment (text TEXT)")
database.execute_sql("INSERT INTO segment VALUES (?)", ("the words of a customer's call",))
"""


def test_debug_logs_carry_no_sql_values(tmp_path):
    """peewee logs each statement with its parameters at DEBUG: a transcript written to the database
    went to the logs too."""
    done = run([sys.executable, "-c", SQL_AT_DEBUG], tmp_path, CLIPTEXT_LOG_LEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    assert "debug lines are written" in done.stderr
    assert "customer's call" not in done.stderr


@pytest.mark.parametrize("port", ["99999", "http", ""])
def test_an_inference_port_out_of_range_is_refused(tmp_path, port):
    """grpc listened on 127.0.0.1:99999 modulo 65536 (34463), where no worker would look for it."""
    done = run([*INFERENCE_SERVER, "--addr", f"127.0.0.1:{port}"], tmp_path)
    assert done.returncode == 2
    assert only_line(done) == (
        f"configuration error: --addr must be a host:port this host can listen on, "
        f"got '127.0.0.1:{port}' (the port must be a number from 0 to 65535)"
    )
