"""compose's rq-dashboard service, run as compose runs it: its command and environment from compose.yaml.

A real gunicorn serving api.admin's dashboard, real Redis (db 12, or CLIPTEXT_TEST_ADMIN_REDIS), jobs
in RQ queues of the test's own. It replaced rq-dashboard's own CLI (Werkzeug's dev server, which let a
page of another site empty a queue with the operator's cached Basic credentials). Browsers' requests are
reproduced header for header: a cross-site form POST (Sec-Fetch-Site: cross-site), a cross-site
navigation with referrerpolicy=no-referrer (no Origin, no Referer), and the dashboard's own `$.post`
(Origin of the page, or "null" with Sec-Fetch-Site: same-origin).
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
import yaml
from rq import Queue

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLIPTEXT_TEST_ADMIN_REDIS", "redis://127.0.0.1:6379/12")
ADMIN = ("operator", secrets.token_urlsafe(12))
SERVICE = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["rq-dashboard"]


@dataclass
class Dashboard:
    url: str
    origin: str
    conn: redis.Redis
    log: Path

    def clear_throttle(self) -> None:
        for key in self.conn.scan_iter(match="cliptext:admin:*"):
            self.conn.delete(key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_command(port: int) -> list[str]:
    command = SERVICE["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    return [part.replace("0.0.0.0:9181", f"127.0.0.1:{port}") for part in argv]


def service_env(data_dir: Path) -> dict[str, str]:
    """compose's environment of the service with this test's Redis and credentials (the image's
    CLIPTEXT_DATA_DIR made a temporary folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPTEXT_", "RQ_DASHBOARD_"))}
    for name in ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    given = {"REDIS_URL": REDIS_URL, "CLIPTEXT_ADMIN_USER": ADMIN[0], "CLIPTEXT_ADMIN_PASSWORD": ADMIN[1]}
    for name in SERVICE["environment"]:
        env[name] = given.get(
            name, {"CLIPTEXT_LOG_LEVEL": "INFO", "CLIPTEXT_LOG_FORMAT": "text"}.get(name, "")
        )
    env["CLIPTEXT_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    tmp = tmp_path_factory.mktemp("rq_dashboard_service")
    port = free_port()
    argv = service_command(port)
    assert argv[0] == "gunicorn", f"compose's rq-dashboard runs {argv[0]}, not gunicorn"
    log = tmp / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *argv[1:]],
            cwd=ROOT,
            env=service_env(tmp / "data"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    conn = redis.Redis.from_url(REDIS_URL)
    found = Dashboard(url=f"{url}/admin/rq", origin=url, conn=conn, log=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                requests.get(f"{url}/admin/rq/", timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        found.clear_throttle()
        yield found
    finally:
        stop(process)
        found.clear_throttle()
        conn.close()


@pytest.fixture
def queue(dashboard: Dashboard) -> Iterator[Queue]:
    """A queue of the test's own with 2 failed jobs and 2 queued ones."""
    q = Queue(f"admin-test-{secrets.token_hex(4)}", connection=dashboard.conn)
    for i in range(2):
        job = q.enqueue("jobs.transcribe.run_transcription", f"txn_f{i}", job_id=f"{q.name}-failed-{i}")
        q.remove(job)
        q.failed_job_registry.add(job, ttl=3600, exc_string="boom")
    for i in range(2):
        q.enqueue("jobs.transcribe.run_transcription", f"txn_q{i}", job_id=f"{q.name}-queued-{i}")
    yield q
    for job_id in q.failed_job_registry.get_job_ids():
        q.failed_job_registry.remove(job_id, delete_job=True)
    q.delete(delete_jobs=True)


def state(q: Queue) -> tuple[int, int]:
    return q.failed_job_registry.count, q.count


def test_sign_in_and_read(dashboard: Dashboard, queue: Queue) -> None:
    assert requests.get(f"{dashboard.url}/", timeout=10).status_code == 401
    page = requests.get(f"{dashboard.url}/", auth=ADMIN, timeout=10)
    assert page.status_code == 200 and "RQ" in page.text
    assert page.headers["Referrer-Policy"] == "same-origin" and page.headers["X-Frame-Options"] == "DENY"
    data = requests.get(f"{dashboard.url}/0/data/queues.json", auth=ADMIN, timeout=10).json()
    assert queue.name in {q["name"] for q in data["queues"]}
    root = requests.get(f"{dashboard.origin}/", auth=ADMIN, timeout=10, allow_redirects=False)
    assert root.status_code in {301, 302, 308} and root.headers["Location"].endswith("/admin/rq/")


def test_the_dashboards_own_buttons_post(dashboard: Dashboard, queue: Queue) -> None:
    """What legitimate use sends: rq-dashboard's pages act with $.post on these links."""
    page = requests.get(f"{dashboard.url}/0/view/jobs/{queue.name}/failed/8/asc/1", auth=ADMIN, timeout=10)
    assert page.status_code == 200
    for button in ("empty-btn", "compact-btn", "requeue-all-btn"):
        handler = page.text.split(f"$('#{button}').click", 1)[1].split("return false;", 1)[0]
        assert "$.post(" in handler, button


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},  # a cross-site form POST
        {"Sec-Fetch-Site": "cross-site"},  # the same from a page with referrerpolicy=no-referrer
        {"Origin": "null"},  # an opaque origin (sandboxed frame, data: URL), no fetch metadata
        {},  # neither Origin nor Referer nor fetch metadata
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},  # another port of the host
    ],
    ids=["form", "no-referrer-form", "null-origin", "no-headers", "referer", "same-site"],
)
def test_changes_from_elsewhere_are_refused(dashboard: Dashboard, queue: Queue, headers: dict) -> None:
    before = state(queue)
    for path in (
        f"/queue/{queue.name}/queued/empty",
        f"/queue/{queue.name}/failed/empty",
        f"/requeue/{queue.name}",
        f"/job/{queue.name}-failed-0/requeue",
        f"/job/{queue.name}-queued-0/delete",
    ):
        answer = requests.post(f"{dashboard.url}{path}", auth=ADMIN, headers=headers, timeout=10)
        assert answer.status_code == 403, (path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "FORBIDDEN"
    assert state(queue) == before == (2, 2)


def test_requeue_all_is_never_a_get(dashboard: Dashboard, queue: Queue) -> None:
    """A cross-site navigation (no Origin, no Referer under no-referrer) requeued every failed job."""
    url = f"{dashboard.url}/requeue/{queue.name}"
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert requests.get(url, auth=ADMIN, headers=navigation, timeout=10).status_code == 403
    assert requests.get(url, auth=ADMIN, timeout=10).status_code == 403
    typed = requests.get(url, auth=ADMIN, headers={"Sec-Fetch-Site": "none"}, timeout=10)
    assert typed.status_code == 405 and typed.headers["Allow"] == "POST"
    assert state(queue) == (2, 2)


def test_the_dashboards_own_posts_work(dashboard: Dashboard, queue: Queue) -> None:
    """Chromium sends the page's Origin (its Referrer-Policy is same-origin), or "null" plus
    Sec-Fetch-Site: same-origin under a no-referrer policy; both are the dashboard itself."""
    own = {"Origin": dashboard.origin, "Sec-Fetch-Site": "same-origin", "X-Requested-With": "XMLHttpRequest"}
    answer = requests.post(f"{dashboard.url}/requeue/{queue.name}", auth=ADMIN, headers=own, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "OK", "count": 2}
    assert state(queue) == (0, 4)
    null = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    answer = requests.post(
        f"{dashboard.url}/queue/{queue.name}/queued/empty", auth=ADMIN, headers=null, timeout=10
    )
    assert answer.status_code == 200 and state(queue) == (0, 0)


def test_password_guessing_is_throttled(dashboard: Dashboard) -> None:
    """compose publishes the port on the host's loopback, but whoever reaches it may not guess freely."""
    dashboard.clear_throttle()
    try:
        codes = [
            requests.get(f"{dashboard.url}/", auth=(ADMIN[0], f"guess{i}"), timeout=10).status_code
            for i in range(12)
        ]
        assert codes[:9] == [401] * 9 and codes[9:] == [429] * 3, codes
        refused = requests.get(f"{dashboard.url}/", auth=ADMIN, timeout=10)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 300
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
    finally:
        dashboard.clear_throttle()
    assert requests.get(f"{dashboard.url}/", auth=ADMIN, timeout=10).status_code == 200
