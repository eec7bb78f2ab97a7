"""The worker's temporary copy of S3 audio (review s3): S3Storage.local_copy downloads into a folder of
the running job's own under the worker's temp root, which the worker removes once the work horse has
ended, even when RQ SIGKILLed it; folders left by a killed worker go when a worker starts.

Real processes: moto's S3 server, `python -m jobs.worker` with its TMPDIR in this test's folder, the API
in-process on a SQLite file shared with the worker, Redis database 13. No inference server answers, so a
job sits in its gRPC call with the audio downloaded, until it is stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from api import create_app
from api.db import db
from api.services.orgs import create_org
from tests.media import sine, write_wav
from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/13"
QUEUE = "transcriptions-tempcopies"
SCRATCH = "cliptext-worker"  # jobs.worker.SCRATCH_FOLDER, under the worker's TMPDIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(folder: Path) -> list[str]:
    """The files below `folder`, read again when the worker removes a folder while it is walked."""
    while True:
        try:
            return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        except FileNotFoundError:
            continue


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "server.log"
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    try:
        wait_for(lambda: connectable(port), 30, log.read_text(errors="replace"))
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server, timeout=10)


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The settings the API (in-process) and the worker share: S3 through moto, a SQLite file, Redis 13."""
    values = {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "cliptext-test",
        "AWS_SECRET_ACCESS_KEY": "cliptext-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CLIPTEXT_DATA_DIR": str(tmp_path / "data"),
        "CLIPTEXT_SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cliptext.db'}",
        "REDIS_URL": REDIS_URL,
        "STORAGE_URL": f"s3://cliptext-{secrets.token_hex(6)}/audio",
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket=values["STORAGE_URL"].split("/")[2])
    connection = redis.Redis.from_url(REDIS_URL)
    connection.flushdb()
    yield values
    connection.flushdb()
    connection.close()
    if db.obj is not None and not db.is_closed():
        db.close()


@contextlib.contextmanager
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`python -m jobs.worker` on QUEUE, its TMPDIR in `tmp_path`, once it listens; yields it and its
    TMPDIR."""
    temp = tmp_path / "worker-tmp"
    temp.mkdir(exist_ok=True)
    log = tmp_path / "worker.log"
    worker_env = {
        **os.environ,
        **env,
        "TMPDIR": str(temp),
        "INFERENCE_ADDR": f"127.0.0.1:{free_port()}",  # nothing answers there
        "CLIPTEXT_LOG_FORMAT": "text",
        "CLIPTEXT_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.worker", "--queues", QUEUE],
            cwd=ROOT,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "listening on" in log.read_text(errors="replace").lower(), 60, "worker start")
        yield process, temp
    finally:
        stop(process, timeout=20)


def test_a_stopped_horse_leaves_no_audio_on_the_worker(env, tmp_path):
    """DELETE of a transcription whose job runs: RQ SIGKILLs the work horse inside local_copy, so its
    TemporaryDirectory was never cleaned up and the deleted audio stayed on the worker's disk. Now the
    worker removes the job's folder once the horse is gone."""
    app = create_app({"REDIS_KEY_PREFIX": "tempcopies:", "RQ_QUEUE": QUEUE, "TESTING": True})
    with app.app_context():
        _, _, raw = create_org("temp copies", f"owner-{secrets.token_hex(4)}@example.com", "pro")
    headers = {"Authorization": f"Bearer {raw}"}
    audio = write_wav(tmp_path / "speech.wav", sine(3.0), 16000).read_bytes()
    boundary, body = encode_multipart(
        {"file": FileStorage(io.BytesIO(audio), filename="speech.wav", content_type="audio/wav")}
    )
    client = app.test_client()
    created = client.post(
        "/v1/transcriptions",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=headers,
    )
    assert created.status_code == 202, created.get_json()
    transcription = f"/v1/transcriptions/{created.get_json()['id']}"

    with worker(env, tmp_path) as (_, temp):

        def downloaded() -> bool:
            status = client.get(transcription, headers=headers).get_json()["status"]
            return status == "processing" and any(name.endswith("object") for name in files_under(temp))

        wait_for(downloaded, 60, (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
        copy = next(p for p in temp.rglob("object"))
        assert copy.read_bytes() == audio

        assert client.delete(transcription, headers=headers).status_code == 204
        # the audio, and then the job's folder it was in (the worker removes it once the horse is gone)
        scratch = temp / SCRATCH
        wait_for(lambda: not files_under(temp) and not list(scratch.iterdir()), 20, files_under(temp))
        assert "stopped" in (tmp_path / "worker.log").read_text(errors="replace")
        assert SCRATCH in copy.parts  # it was in the job's folder under the worker's temp root


def test_a_starting_worker_removes_job_folders_no_live_process_holds(env, tmp_path):
    """A worker and its horse both killed leave their job folder (audio inside): the next worker to start
    removes it, and leaves alone a folder whose job is still running (its lock held)."""
    root = tmp_path / "worker-tmp" / SCRATCH
    dead, live = root / "job-deadbeef", root / "job-running"
    for folder in (dead, live):
        (folder / "tmpcopy").mkdir(parents=True)
        (folder / "tmpcopy" / "object").write_bytes(b"audio of a job whose worker was killed")
    holder = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a running job's worker and horse hold it
        with worker(env, tmp_path):
            assert not dead.exists()
            assert (live / "tmpcopy" / "object").exists()
    finally:
        os.close(holder)
