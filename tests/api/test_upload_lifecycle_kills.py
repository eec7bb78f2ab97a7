"""API processes killed -9 while an upload's bytes come in (review s1): a real gunicorn killed in the
middle of a presigned PUT's body, and an API process killed just before a multipart upload's temp
file is renamed into place.

The PUT can be sent again at once (it was 409 "already used", the slot taken for an hour), and nothing
the killed processes wrote outlives the upload: the temp files went with no purge ever removing them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
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
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

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
def gunicorn(app, log: Path, **extra_env: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """`api:create_app()` under gunicorn (one gthread worker) on this test's database, Redis and storage,
    in a session of its own so that one killpg takes master and worker down together."""
    settings = app.extensions["cliptext"].settings
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "STORAGE_URL": settings.storage_url,
        "CLIPTEXT_LOG_FORMAT": "text",
        **extra_env,
    }
    with serve("api:create_app()", env, log) as started:
        yield started


@contextlib.contextmanager
def serve(app_spec: str, env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """(server, port): `app_spec` under gunicorn, one gthread worker of 4 threads, answering its health
    check; in a session of its own, killed with it (SIGKILL to the group) at the end."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread"]
    command += ["--threads", "4", "--bind", f"127.0.0.1:{port}", app_spec]
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


LEASE = 2.0  # CLIPTEXT_UPLOAD_SLOT_LEASE of the gunicorn these tests run


def multipart_head(port: int, headers: dict[str, str], data: bytes) -> tuple[bytes, bytes]:
    """(request head, body) of a multipart POST /v1/transcriptions of `data` as jfk.mp3."""
    boundary, body = encode_multipart(
        {"file": FileStorage(io.BytesIO(data), filename="jfk.mp3", content_type="audio/mpeg")}
    )
    head = (
        f"POST /v1/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: {headers['Authorization']}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def wait_for_slot(app) -> None:
    deadline = time.monotonic() + 30
    while True:
        with app.app_context():
            if Upload.select().where(Upload.status == "uploaded").exists():
                return
        assert time.monotonic() < deadline, "the multipart request took no slot"
        time.sleep(0.05)


def one_slot_org(new_org):
    """One concurrent upload, as on the Free plan, without its 10 requests a minute (the tests poll)."""
    return new_org("enterprise", custom_rate_limit=100_000, custom_concurrent_uploads=1)


def cap_reached(answer) -> bool:
    return answer.status_code == 429 and answer.get_json()["error"]["code"] == "CONCURRENT_UPLOAD_LIMIT"


def post_file(client, headers: dict[str, str], data: bytes):
    return client.post(
        "/v1/transcriptions",
        headers=headers,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(data), "jfk.mp3", "audio/mpeg")},
    )


def test_a_multipart_upload_killed_with_its_process_frees_its_slot_within_the_lease(app, new_org, tmp_path):
    """Its slot was reserved for an hour: a Free organization (one concurrent upload) whose upload an
    API process took down with it (a deploy's SIGKILL, a lost machine) could upload nothing for that hour."""
    _, headers = one_slot_org(new_org)
    data = JFK_MP3.read_bytes()
    with (
        gunicorn(app, tmp_path / "gunicorn.log", CLIPTEXT_UPLOAD_SLOT_LEASE=str(LEASE)) as (server, port),
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        head, body = multipart_head(port, headers, data)
        sock.sendall(head + body[: len(body) // 2])
        wait_for_slot(app)
        killed = group_members(server.pid)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        wait_until_dead(killed)
    client = app.test_client()
    held = post_file(client, headers, data)
    assert cap_reached(held), held.get_json()  # the slot counts until its lease runs out ...
    deadline = time.monotonic() + LEASE + 10
    while cap_reached(answer := post_file(client, headers, data)):
        assert time.monotonic() < deadline, answer.get_json()  # ... not for an hour
        time.sleep(0.25)
    assert answer.status_code == 202, answer.get_json()


def test_a_slow_multipart_upload_keeps_its_slot_past_the_lease(app, new_org, tmp_path):
    """The lease is renewed while the body comes in: the slot neither lapses under a slow upload (a
    second upload would then pass the cap) nor fails the upload as expired."""
    _, headers = one_slot_org(new_org)
    data = JFK_MP3.read_bytes()
    client = app.test_client()
    with (
        gunicorn(app, tmp_path / "gunicorn.log", CLIPTEXT_UPLOAD_SLOT_LEASE=str(LEASE)) as (_, port),
        socket.create_connection(("127.0.0.1", port), timeout=60) as sock,
    ):
        head, body = multipart_head(port, headers, data)
        sock.sendall(head)
        wait_for_slot(app)
        chunks = [body[i : i + len(body) // 10 + 1] for i in range(0, len(body), len(body) // 10 + 1)]
        started = time.monotonic()
        for chunk in chunks[:-1]:  # about 3 leases
            sock.sendall(chunk)
            time.sleep(3 * LEASE / len(chunks))
            refused = post_file(client, headers, data)
            assert cap_reached(refused), (time.monotonic() - started, refused.get_json())
        sock.sendall(chunks[-1])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:2000]
