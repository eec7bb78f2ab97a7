"""Prometheus metrics of the API (`GET /metrics`) and the one log line per request.

Requests are counted by endpoint (the URL rule, e.g. `/v1/transcriptions/<string:transcription_id>`,
so ids never become labels), method and status, and timed in a histogram. Under gunicorn with
several worker processes set PROMETHEUS_MULTIPROC_DIR (an empty folder, wiped at each start) and run
gunicorn with `-c python:api.gunicorn_conf`: every process writes its samples there and /metrics
adds them up. Without it, /metrics shows the process that answered (fine for one worker process).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from flask.views import MethodView
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from cliptext.jsonlog import request_id_var
from cliptext.settings import Settings

log = logging.getLogger("api.requests")

REQUESTS = Counter("cliptext_api_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "cliptext_api_request_duration_seconds",
    "Time to answer an HTTP request",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


# the method label takes these values only: any other token a client sends (FOOBAR, PROPFIND…) is
# "other", so that made-up methods cannot add series without end
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def _endpoint() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _start() -> None:
    g.metrics_started = time.perf_counter()
    g.request_id_token = request_id_var.set(g.get("request_id"))


def _observe(response: Response) -> Response:
    started = g.get("metrics_started")
    endpoint, method = _endpoint(), method_label(request.method)
    REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    if started is not None:
        seconds = time.perf_counter() - started
        LATENCY.labels(endpoint, method).observe(seconds)
        log.info("%s %s %d %.1f ms", request.method[:16], request.path, response.status_code, seconds * 1000)
    return response


def _forget_request_id(_exc: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id_var.reset(token)


def registry(settings: Settings) -> CollectorRegistry:
    """The samples to expose: this process's, or every gunicorn process's in multiprocess mode."""
    if not settings.prometheus_multiproc_dir:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected, path=settings.prometheus_multiproc_dir)
    return collected


class MetricsView(MethodView):
    public = True  # no API key: scraped by Prometheus; keep /metrics off the public load balancer

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def get(self) -> Response:
        return Response(generate_latest(registry(self.settings)), content_type=CONTENT_TYPE_LATEST)


def install_metrics(app: Flask, settings: Settings) -> None:
    """Time and count every request (register before the auth hook, so refusals count too)."""
    app.before_request(_start)
    app.after_request(_observe)
    app.teardown_request(_forget_request_id)
    app.add_url_rule("/metrics", view_func=MetricsView.as_view("metrics", settings=settings))
