"""Operators' view of the real stack: /metrics of the API and the worker, JSON logs with the request id
carried API -> job -> inference server, and rq-dashboard behind the operator credentials."""

from __future__ import annotations

import json
import re
import secrets
import time

import requests

from tests.jobs.stack import Proc, Stack
from tests.media import AUDIO_DIR

JFK = AUDIO_DIR / "jfk.mp3"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and found == labels:
            return float(value)
    return 0.0


def test_api_metrics_count_requests(ops_stack: Stack) -> None:
    endpoint = "/v1/transcriptions"

    def count() -> float:
        text = requests.get(f"{ops_stack.api_url}/metrics", timeout=10).text
        return sample(text, "cliptext_api_requests_total", endpoint=endpoint, method="GET", status="200")

    before = count()
    for _ in range(3):
        assert ops_stack.http("GET", endpoint).status_code == 200
    assert count() == before + 3
    text = requests.get(f"{ops_stack.api_url}/metrics", timeout=10).text
    assert sample(text, "cliptext_api_request_duration_seconds_count", endpoint=endpoint, method="GET") >= 3


def test_worker_metrics_and_request_id_in_every_log(
    ops_stack: Stack, worker: Proc, worker_metrics_port: int
) -> None:
    metrics_url = f"http://127.0.0.1:{worker_metrics_port}/metrics"
    before = requests.get(metrics_url, timeout=10).text
    request_id = f"ops-{secrets.token_hex(6)}"
    upload_id = ops_stack.upload(JFK, "audio/mpeg")
    reply = ops_stack.http(
        "POST", "/v1/transcriptions", json={"upload_id": upload_id}, headers={"X-Request-Id": request_id}
    )
    assert reply.status_code == 202 and reply.headers["X-Request-Id"] == request_id
    txn_id = reply.json()["id"]
    assert ops_stack.wait(txn_id, timeout=180)["status"] == "completed"

    # the worker counts the job once its horse has exited: give it a moment
    deadline = time.monotonic() + 15
    while True:
        after = requests.get(metrics_url, timeout=10).text
        labels = {"queue": "transcriptions", "outcome": "completed"}
        done = sample(after, "cliptext_worker_jobs_total", **labels)
        if done == sample(before, "cliptext_worker_jobs_total", **labels) + 1:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.2)
    audio = sample(after, "cliptext_worker_audio_seconds_total") - sample(
        before, "cliptext_worker_audio_seconds_total"
    )
    assert 10.5 <= audio <= 11.5
    assert 'cliptext_queue_depth{queue="transcriptions"} 0.0' in after

    # worker: JSON lines; the job's lines carry the request id of the API request
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg", "request_id"} <= set(entry) for entry in lines)
    mine = [entry for entry in lines if entry["request_id"] == request_id]
    assert any(txn_id in entry["msg"] and "completed" in entry["msg"] for entry in mine), mine
    # inference server: the gRPC call carried the same id
    assert ops_stack.inference is not None
    assert f"request_id={request_id}" in ops_stack.inference.log()
    # API: its own line for that request
    api_lines = [json.loads(line) for line in ops_stack.api.log().splitlines() if line.startswith("{")]
    assert any(e["request_id"] == request_id and "POST /v1/transcriptions 202" in e["msg"] for e in api_lines)


def test_rq_dashboard_needs_operator_credentials(ops_stack: Stack) -> None:
    url = f"{ops_stack.api_url}/admin/rq/"
    admin = (ops_stack.env["CLIPTEXT_ADMIN_USER"], ops_stack.env["CLIPTEXT_ADMIN_PASSWORD"])
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url, auth=(admin[0], "wrong"), timeout=10).status_code == 401
    page = requests.get(url, auth=admin, timeout=10)
    assert page.status_code == 200 and "<title>RQ dashboard</title>" in page.text
    queues = requests.get(f"{ops_stack.api_url}/admin/rq/0/data/queues.json", auth=admin, timeout=10)
    assert queues.status_code == 200
    names = {q["name"] for q in queues.json()["queues"]}
    assert any(name.startswith("transcriptions.org_") for name in names), names  # a queue per organization
