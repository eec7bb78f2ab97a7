"""Prometheus metrics of an inference server: calls by outcome, audio seconds, real-time factor, in flight.

The servicer reports each Transcribe call once, when it ends (`observe_call`), and brackets it with
IN_FLIGHT; `start_exporter(settings.inference_metrics_port)` serves them over HTTP from a daemon thread
(0 = no exporter). The real-time factor is wall time over audio time for calls that succeeded, so it
includes the wait for a decoding slot: a rising RTF with steady decode speed means the server is full.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

CALLS = Counter("cliptext_inference_calls_total", "Transcribe calls, by outcome", ["outcome"])
AUDIO_SECONDS = Counter("cliptext_inference_audio_seconds_total", "Seconds of audio transcribed")
PROCESSING_SECONDS = Histogram(
    "cliptext_inference_call_duration_seconds",
    "Wall time of a Transcribe call, from its first message to its last",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
REAL_TIME_FACTOR = Histogram(
    "cliptext_inference_real_time_factor",
    "Wall time / audio duration of successful calls (below 1: faster than real time)",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
)
IN_FLIGHT = Gauge("cliptext_inference_in_flight", "Transcribe calls being decoded or waiting for a slot")

OK = "OK"


def observe_call(outcome: str, audio_seconds: float, wall_seconds: float) -> None:
    """Count one finished call (outcome: OK, an ErrorCode, QUEUE_FULL, CANCELLED, DEADLINE_EXCEEDED...)."""
    CALLS.labels(outcome).inc()
    PROCESSING_SECONDS.observe(wall_seconds)
    if audio_seconds > 0:
        AUDIO_SECONDS.inc(audio_seconds)
        if outcome == OK:
            REAL_TIME_FACTOR.observe(wall_seconds / audio_seconds)


def start_exporter(port: int, addr: str = "0.0.0.0") -> int:
    """Serve /metrics on `port` (0: no exporter); returns the port."""
    if not port:
        return 0
    start_http_server(port, addr=addr)
    log.info("metrics on port %d", port)
    return port
