"""inference.metrics: what the servicer reports is what a Prometheus scrape of the exporter reads."""

from __future__ import annotations

import re

import requests

from inference import metrics
from tests.jobs.stack import free_port


def _value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_exporter_serves_calls_audio_rtf_and_in_flight() -> None:
    port = metrics.start_exporter(free_port(), addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    before = requests.get(url, timeout=10).text
    metrics.IN_FLIGHT.inc()
    metrics.observe_call("OK", audio_seconds=10.0, wall_seconds=1.0)
    metrics.observe_call("AUDIO_DECODE_ERROR", audio_seconds=0.0, wall_seconds=0.05)
    during = requests.get(url, timeout=10).text
    metrics.IN_FLIGHT.dec()
    after = requests.get(url, timeout=10).text

    ok = 'cliptext_inference_calls_total{outcome="OK"}'
    bad = 'cliptext_inference_calls_total{outcome="AUDIO_DECODE_ERROR"}'
    assert _value(after, ok) == _value(before, ok) + 1
    assert _value(after, bad) == _value(before, bad) + 1
    audio = "cliptext_inference_audio_seconds_total"
    assert _value(after, audio) == _value(before, audio) + 10.0
    # one RTF sample of 0.1 (failed calls give none)
    rtf = "cliptext_inference_real_time_factor"
    assert _value(after, f"{rtf}_count") == _value(before, f"{rtf}_count") + 1
    assert _value(after, f'{rtf}_bucket{{le="0.1"}}') == _value(before, f'{rtf}_bucket{{le="0.1"}}') + 1
    assert _value(during, "cliptext_inference_in_flight") == _value(after, "cliptext_inference_in_flight") + 1
