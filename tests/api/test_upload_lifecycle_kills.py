"""API processes killed -9 while an upload's bytes come in (review s1): a real gunicorn killed in the
middle of a presigned PUT's body, and an API process killed just before a multipart upload's temp
file is renamed into place.

The PUT can be sent again at once (it was 409 "already used", the slot taken for an hour), and nothing
the killed processes wrote outlives the upload: the temp files went with no purge ever removing them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from api.models import Upload, utcnow
from tests.api.helpers import JFK_MP3, app_config, local_path, presign, stored_files

ROOT = Path(__file__).resolve().parents[2]
SENT_BEFORE_KILL = 40_000  # of jfk.mp3's 76 kB

# an API process that kills itself (-9) as a multipart upload's temp file is about to be renamed in place
MULTIPART_KILLED = r"""
import io, json, os, signal, sys
from api import create_app

config, headers, audio = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
client = create_app(config).test_client()
real_replace = os.replace

def killed_before_the_rename(source, *args, **kwargs):
    if ".part-" in os.fspath(source):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, *args, **kwargs)

os.replace = killed_before_the_rename
data = open(audio, "rb").read()
client.post("/v1/transcriptions", headers=headers, content_type="multipart/form-data",
            data={"file": (io.BytesIO(data), "jfk.mp3", "audio/mpeg")})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(app, log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`api:create_app()` under gunicorn (one gthread worker) on this test's database, Redis and storage,
    in a session of its own so that one killpg takes master and worker down together."""
    settings = app.extensions["cliptext"].settings
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "STORAGE_URL": settings.storage_url,
        "CLIPTEXT_LOG_FORMAT": "text",
    }
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread"]
    command += ["--threads", "4", "--bind", f"127.0.0.1:{port}", "api:create_app()"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text(errors="replace")[-3000:]
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
                break
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield server, port
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


def kill_mid_put(app, tmp_path: Path, presigned: dict, data: bytes) -> None:
    """Send the PUT's headers and part of its body to a real gunicorn, then kill -9 master and worker
    once the worker is writing the bytes to storage."""
    with (
        gunicorn(app, tmp_path / "gunicorn.log") as (server, port),
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        head = (
            f"PUT {local_path(presigned['url'])} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: audio/mpeg\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[:SENT_BEFORE_KILL])
        deadline = time.monotonic() + 30
        while not any(".part-" in name for name in stored_files(tmp_path)):
            assert time.monotonic() < deadline, stored_files(tmp_path)
            time.sleep(0.05)
        time.sleep(0.3)  # what was sent is on disk
        killed = group_members(server.pid)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        wait_until_dead(killed)


def group_members(pgid: int) -> list[int]:
    """The processes of process group `pgid` (gunicorn's master and its worker)."""
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid
            ):
                members.append(int(entry.name))
    return members


def wait_until_dead(pids: list[int]) -> None:
    """Until every thread of each has exited: only then has the kernel closed the process's files (a
    thread group's leader shows as a zombie while its other threads are still going)."""

    def running_threads(pid: int) -> int:
        count = 0
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, IndexError):
                count += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return count

    deadline = time.monotonic() + 10
    while any(running_threads(pid) for pid in pids):
        assert time.monotonic() < deadline, pids
        time.sleep(0.02)


def test_a_put_killed_mid_body_can_be_sent_again(app, new_org, tmp_path):
    _, headers = new_org("free")  # one concurrent upload: a stuck claim would block the organization
    client = app.test_client()
    data = JFK_MP3.read_bytes()
    presigned = presign(client, headers, data)
    kill_mid_put(app, tmp_path, presigned, data)
    assert any(".part-" in name for name in stored_files(tmp_path))  # what the killed PUT left

    again = client.put(local_path(presigned["url"]), data=data, headers=presigned["headers"])
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["size"] == len(data)
    done = client.post("/v1/uploads/complete", json={"upload_id": presigned["id"]}, headers=headers)
    assert done.status_code == 200 and done.get_json()["status"] == "completed", done.get_json()
    with app.app_context():
        key = Upload.get(Upload.public_id == presigned["id"]).storage_key
    assert stored_files(tmp_path) == [key]  # the killed PUT's temp and lock files went with the retry
    assert (tmp_path / "storage" / key).read_bytes() == data


def test_what_killed_uploads_left_goes_with_the_purge(app, new_org, tmp_path):
    """A PUT killed mid-body and never sent again, and a multipart upload whose process died before its
    rename: once their reservations expire, `flask uploads purge-expired` leaves no file behind."""
    _, headers = new_org("pro")
    data = JFK_MP3.read_bytes()
    kill_mid_put(app, tmp_path, presign(app.test_client(), headers, data), data)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            MULTIPART_KILLED,
            json.dumps(app_config(app)),
            json.dumps(headers),
            str(JFK_MP3),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    with app.app_context():
        assert sorted(u.status for u in Upload.select()) == ["uploaded", "uploaded"]
    assert len([name for name in stored_files(tmp_path) if ".part-" in name]) == 2

    with app.app_context():  # the reservations expire
        Upload.update(expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
    result = app.test_cli_runner().invoke(args=["uploads", "purge-expired"])
    assert result.exit_code == 0 and "purged 2" in result.output, result.output
    with app.app_context():
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []
