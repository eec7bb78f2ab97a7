"""Long recordings through the real pipeline: the inference server's memory must not grow with the length,
and audio over CLIPTEXT_MAX_AUDIO_SECONDS must be refused (AUDIO_TOO_LONG) before it is decoded.

The 2-hour figure is bench/long_audio.py (too slow for the suite on a CPU); here a 10-minute file must
stay under a bound, and a 29-minute one (mostly digital silence, which the engine skips) must peak
where a 1-minute one does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.stack import Stack, running
from tests.reliability.long_media import long_silence, speech_then_silence
from tests.reliability.pipeline import RssSampler, processing_seconds, rss_mb, submit
from tests.reliability.redis_server import RedisServer

MAX_AUDIO_SECONDS = 1800
# what the server may grow above its idle size for a 10-minute file (a 30 s window needs ~2 MB of
# samples and ~1 MB of features; the model's buffers are the rest)
RSS_GROWTH_LIMIT_MB = 200
# how much higher the peak of a 29-minute file may be than a 1-minute one (RSS noise is ~40 MiB)
RSS_LENGTH_ALLOWANCE_MB = 80
REFUSAL_SECONDS = 5.0


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, redis_server: RedisServer
) -> Iterator[Stack]:
    with running(
        tmp_path_factory.mktemp("long_stack"),
        model_dir,
        redis_url=redis_server.url,
        CLIPTEXT_MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
        # glibc then gives every large block back when it is freed (no growing mmap threshold that
        # keeps up to 32 MB blocks in the heap): the server's RSS follows what it really holds
        MALLOC_MMAP_THRESHOLD_="131072",
    ) as stack:
        yield stack


def _transcribe(stack: Stack, path: Path, timeout: float = 300.0) -> tuple[dict, float, float]:
    """(final body, server RSS before, server RSS peak) of one file sent by presigned upload."""
    pid = stack.inference.process.pid
    with RssSampler(pid, interval=0.05) as rss:
        submission = submit(stack, path, "audio/flac", "presigned")
        assert submission.created, submission.body
        body = stack.wait(submission.body["id"], timeout=timeout)
    return body, rss.start_mb, rss.peak_mb


def test_ten_minutes_keep_the_server_memory_under_a_bound(stack: Stack, tmp_path: Path) -> None:
    ten = speech_then_silence(tmp_path / "ten-minutes.flac", 600.0)
    stack.start_worker()
    _transcribe(stack, speech_then_silence(tmp_path / "one-minute.flac", 60.0))  # warm-up
    body, start, peak = _transcribe(stack, ten)
    print(f"\nserver RSS, 10 min: {start:.0f} -> peak {peak:.0f} MiB ({processing_seconds(body):.1f} s)")
    assert body["status"] == "completed", body
    assert "ask not what your country" in body["text"].lower()
    assert body["duration"] == pytest.approx(600.0, abs=0.5)
    assert peak - start < RSS_GROWTH_LIMIT_MB


def test_the_server_memory_does_not_grow_with_the_length(stack: Stack, tmp_path: Path) -> None:
    """29 minutes (just under the limit) must peak where 1 minute does: the server decodes and transcribes
    window by window. Holding the whole recording costs 29 x 60 x 16000 x 4 bytes = 111 MB of samples,
    and as much again for each copy (concatenation, padding)."""
    one = speech_then_silence(tmp_path / "one-minute.flac", 60.0)
    long = speech_then_silence(tmp_path / "29-minutes.flac", 29 * 60.0)
    stack.start_worker()
    _transcribe(stack, one)  # warm-up: the model's buffers grow on the first calls
    _, _, peak_one = _transcribe(stack, one)
    body, _, peak_long = _transcribe(stack, long)
    print(f"\nserver RSS peak: 1 min {peak_one:.0f} MiB, 29 min {peak_long:.0f} MiB")
    assert body["status"] == "completed", body
    assert peak_long - peak_one < RSS_LENGTH_ALLOWANCE_MB, (
        f"29 min peaks {peak_long - peak_one:.0f} MiB above 1 min: the server holds the whole recording"
    )


def test_hours_over_the_limit_are_refused_at_upload(stack: Stack, tmp_path: Path) -> None:
    three_hours = long_silence(tmp_path, "flac", 3 * 3600.0)
    assert three_hours.stat().st_size < 3_000_000
    for via in ("multipart", "presigned"):
        started = time.monotonic()
        refused = submit(stack, three_hours, "audio/flac", via)
        took = time.monotonic() - started
        assert refused.status == 422 and refused.code == "AUDIO_TOO_LONG", refused.body
        assert took < REFUSAL_SECONDS, f"{via}: {took:.1f} s to refuse"


def test_a_header_that_understates_the_length_is_refused_before_decoding_it_all(
    stack: Stack, tmp_path: Path
) -> None:
    """A FLAC whose STREAMINFO says 60 s but which holds 3 h passes every header check: the decoder must
    stop at the limit, not decode 3 h (600 MB of samples) and refuse afterwards."""
    lying = long_silence(tmp_path, "flac", 3 * 3600.0, honest=False)
    stack.start_worker()
    idle = rss_mb(stack.inference.process.pid)
    with RssSampler(stack.inference.process.pid, interval=0.05) as rss:
        submission = submit(stack, lying, "audio/flac", "presigned")
        assert submission.created, submission.body  # the headers say 60 s
        body = stack.wait(submission.body["id"], timeout=300)
    took = processing_seconds(body)
    print(
        f"\nlying 3 h FLAC: {body['status']} {body['error']} after {took:.1f} s;"
        f" server RSS {idle:.0f} -> peak {rss.peak_mb:.0f} MiB"
    )
    assert body["status"] == "failed" and body["error"]["code"] == "AUDIO_TOO_LONG", body
    assert took < 3 * REFUSAL_SECONDS, f"{took:.1f} s: the whole file was decoded before the refusal"
    assert rss.peak_mb - idle < RSS_GROWTH_LIMIT_MB
