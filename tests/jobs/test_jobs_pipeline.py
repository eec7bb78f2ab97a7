"""End to end through real processes: upload -> API -> Redis -> worker -> inference server -> database."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import jiwer
import pytest
from rq.job import Job

from tests.jobs.stack import Stack
from tests.media import AUDIO_DIR, write_mp4_with_video

JFK = AUDIO_DIR / "jfk.mp3"
LONG = AUDIO_DIR / "multilingual.mp3"


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def assert_jfk(body: dict, transcripts: dict) -> None:
    assert body["status"] == "completed", body
    reference = words(transcripts["jfk.mp3"]["text"])
    assert jiwer.wer(reference, words(body["text"])) <= 0.05, body["text"]
    assert body["duration"] == pytest.approx(11.0, abs=0.2)
    assert body["language"] == "en"
    assert body["progress"] == 1.0
    assert body["error"] is None
    assert body["segments"], body
    assert "".join(s["text"] for s in body["segments"]).strip() == body["text"]


def test_presigned_mp3_upload_is_transcribed(stack: Stack, transcripts: dict) -> None:
    stack.start_worker()
    created = stack.create(stack.upload(JFK, "audio/mpeg"))
    assert created["status"] == "queued"
    body = stack.wait(created["id"], timeout=120)
    assert_jfk(body, transcripts)
    assert body["started_at"] and body["completed_at"]


def test_mp4_with_a_video_track_is_transcribed(stack: Stack, transcripts: dict, tmp_path: Path) -> None:
    video = write_mp4_with_video(tmp_path / "jfk.mp4")
    stack.start_worker()
    body = stack.wait(stack.create(stack.upload(video, "video/mp4"))["id"], timeout=120)
    assert_jfk(body, transcripts)


def test_multipart_upload_is_transcribed(stack: Stack, transcripts: dict) -> None:
    stack.start_worker()
    with JFK.open("rb") as handle:
        reply = stack.http(
            "POST",
            "/v1/transcriptions",
            files={"file": ("jfk.mp3", handle, "audio/mpeg")},
            data={"word_timestamps": "true"},
        )
    assert reply.status_code == 202, reply.text
    body = stack.wait(reply.json()["id"], timeout=120)
    assert_jfk(body, transcripts)
    first = body["segments"][0]
    assert first["words"] and first["words"][0]["start"] <= first["words"][-1]["end"]


def test_corrupt_audio_fails_at_once_and_the_worker_keeps_serving(
    stack: Stack, transcripts: dict, tmp_path: Path
) -> None:
    # a real MP3 header (so the upload passes the API's probe) followed by zeros: undecodable
    corrupt = tmp_path / "corrupt.mp3"
    data = JFK.read_bytes()
    corrupt.write_bytes(data[:8000] + bytes(len(data) - 8000))
    worker = stack.start_worker()
    created = stack.create(stack.upload(corrupt, "audio/mpeg"))
    started = time.monotonic()
    body = stack.wait(created["id"], timeout=60)
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "AUDIO_DECODE_ERROR", body
    assert time.monotonic() - started < 15
    assert body["segments"] == []
    assert not stack.job_hash(created["id"]).get("number_of_retries")  # not retried
    # the same worker process goes on with the next job
    assert_jfk(stack.wait(stack.create(stack.upload(JFK, "audio/mpeg"))["id"], timeout=120), transcripts)
    assert worker.alive()


def test_worker_killed_mid_job_is_recovered_without_duplicates(stack: Stack, transcripts: dict) -> None:
    first = stack.start_worker(name="doomed")
    created = stack.create(stack.upload(LONG, "audio/mpeg"))
    deadline = time.monotonic() + 120
    while not stack.segments(created["id"]):
        assert time.monotonic() < deadline, first.log()
        time.sleep(0.1)
    first.kill()  # SIGKILL the worker and its work horse: no cleanup code runs
    assert stack.get(created["id"])["status"] == "processing"

    stack.start_worker(name="rescuer")
    body = stack.wait(created["id"], timeout=240)
    assert body["status"] == "completed", body
    rows = stack.segments(created["id"])
    assert [row[0] for row in rows] == list(range(len(rows)))
    starts = [row[1] for row in rows]
    assert starts == sorted(starts), "segments of two runs interleaved"
    assert "".join(row[3] for row in rows).strip() == body["text"]
    assert len(body["segments"]) == len(rows)
    english = words(transcripts["multilingual.mp3"]["text_en"])
    assert jiwer.wer(english, words(body["text"])[: len(english)]) < 0.5
    assert Job.fetch(created["id"], connection=stack.redis).meta.get("recoveries") == 1


def test_delete_while_processing_stops_the_job_and_leaves_nothing(stack: Stack, transcripts: dict) -> None:
    worker = stack.start_worker()
    created = stack.create(stack.upload(LONG, "audio/mpeg"))
    deadline = time.monotonic() + 120
    while not stack.segments(created["id"]):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    [(row_id, storage_key)] = stack.query(
        "SELECT t.id, u.storage_key FROM transcription t JOIN upload u ON t.upload_id = u.id "
        "WHERE t.public_id = ?",
        created["id"],
    )
    audio = stack.tmp / "data" / "storage" / storage_key
    assert audio.exists()

    assert stack.http("DELETE", f"/v1/transcriptions/{created['id']}").status_code == 204
    assert stack.http("GET", f"/v1/transcriptions/{created['id']}").status_code == 404
    time.sleep(3)  # let the stopped job (or its last write) settle
    assert stack.query("SELECT COUNT(*) FROM segment WHERE transcription_id = ?", row_id) == [(0,)]
    assert not audio.exists()
    deadline = time.monotonic() + 15  # the server saw the call go away and freed its slot
    while "outcome=CANCELLED" not in stack.inference.log():
        assert time.monotonic() < deadline, stack.inference.log()[-3000:]
        time.sleep(0.2)
    # the worker is still there for the next job
    assert_jfk(stack.wait(stack.create(stack.upload(JFK, "audio/mpeg"))["id"], timeout=120), transcripts)
    assert worker.alive()


def test_an_idle_worker_stops_on_sigterm(stack: Stack) -> None:
    """docker stop / Ctrl-C: SIGTERM ends an idle worker at once, it does not start its loop again."""
    worker = stack.start_worker(name="sigterm-idle")
    deadline = time.monotonic() + 30
    while stack.redis.hget("rq:worker:sigterm-idle", "state") != b"idle":  # signal handlers installed
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0, worker.log()
    assert "starting again" not in worker.log()
