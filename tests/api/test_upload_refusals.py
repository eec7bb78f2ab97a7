"""Uploads refused or cut short leave nothing behind, and every upload path shares the plan's
concurrent-upload cap: multipart bodies hold a slot while they come in, 429 and 503 say when to retry."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time

import pytest
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from api.models import Transcription, Upload, utcnow
from api.queue import org_queue
from api.services import uploads as upload_service
from tests.api.helpers import JFK_MP3, upload_file

MULTIPART_PATHS = ("/v1/transcriptions", "/v1/audio/transcriptions")


def presign(client, headers, filename="talk.mp3", content_type="audio/mpeg", size=1000):
    return client.post(
        "/v1/uploads/presigned",
        json={"filename": filename, "content_type": content_type, "size": size},
        headers=headers,
    )


def stored_files(tmp_path) -> list[str]:
    return sorted(str(p) for p in (tmp_path / "storage").rglob("*") if p.is_file())


def form_for(path: str, filename: str = "jfk.mp3", **fields: str) -> dict:
    """What the endpoint at `path` needs besides `fields`: the file, and OpenAI's `model`."""
    extra = {"model": "whisper-1"} if path.startswith("/v1/audio/") else {}
    return {"file": (io.BytesIO(JFK_MP3.read_bytes()), filename, "audio/mpeg"), **extra, **fields}


class HeldBody(io.BytesIO):
    """A multipart request body that stops at its first read until released: an upload still coming in."""

    def __init__(self, path: str) -> None:
        audio = FileStorage(io.BytesIO(JFK_MP3.read_bytes()), "jfk.mp3", content_type="audio/mpeg")
        fields = {"model": "whisper-1"} if path.startswith("/v1/audio/") else {}
        boundary, data = encode_multipart(MultiDict({**fields, "file": audio}))
        super().__init__(data)
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self.reading = threading.Event()
        self.release = threading.Event()

    def _held(self) -> None:
        self.reading.set()
        self.release.wait(30)

    def read(self, size: int | None = -1) -> bytes:
        self._held()
        return super().read(size)

    def read1(self, size: int | None = -1) -> bytes:
        self._held()
        return super().read1(size)

    def readinto(self, buffer) -> int:
        self._held()
        return super().readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        self._held()
        return super().readline(size)


def send_held(app, path: str, headers: dict[str, str]) -> tuple[HeldBody, threading.Thread, list]:
    """POST a held multipart body from another thread; its response lands in the returned list."""
    body, answers = HeldBody(path), []

    def send() -> None:
        answers.append(
            app.test_client().post(
                path,
                input_stream=body,
                content_type=body.content_type,
                headers=headers,
            )
        )

    thread = threading.Thread(target=send)
    thread.start()
    return body, thread, answers


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_multipart_refused_for_its_options_stores_nothing(client, app, new_org, tmp_path):
    """A webhook_url create would refuse is refused before the file is stored: no row, no bytes, and
    the slot it held is free again."""
    _, headers = new_org("free")
    response = client.post(
        "/v1/transcriptions",
        data=form_for("/v1/transcriptions", webhook_url="http://10.0.0.1/hook"),
        headers=headers,
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == {"field": "webhook_url"}
    with app.app_context():
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []
    assert presign(client, headers).status_code == 201


def test_every_multipart_outcome_gives_its_slot_back(client, app, new_org, tmp_path):
    """Free plan, one slot: refused at any step, or answered from the Idempotency-Key's record, a
    multipart request leaves no reservation behind, so the next upload is let in."""
    _, headers = new_org("free")
    png = (io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "fake.mp3", "audio/mpeg")
    refused = [
        ("/v1/transcriptions", {"file": png}),
        ("/v1/transcriptions", {"file": (io.BytesIO(b"hi"), "notes.txt")}),
        ("/v1/transcriptions", {"language": "English!", **form_for("/v1/transcriptions")}),
        ("/v1/audio/transcriptions", form_for("/v1/audio/transcriptions", response_format="docx")),
        ("/v1/audio/transcriptions", {"model": "whisper-1"}),
    ]
    for path, data in refused:
        response = client.post(path, data=data, headers=headers, content_type="multipart/form-data")
        assert response.status_code in {400, 422}, (path, response.get_json())
    keyed = {**headers, "Idempotency-Key": "one-upload"}
    first = client.post("/v1/transcriptions", data=form_for("/v1/transcriptions"), headers=keyed)
    again = client.post("/v1/transcriptions", data=form_for("/v1/transcriptions"), headers=keyed)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    with app.app_context():
        assert Upload.select().count() == 1  # the one transcribed
    assert len(stored_files(tmp_path)) == 1
    assert presign(client, headers).status_code == 201


@pytest.mark.parametrize("path", MULTIPART_PATHS)
def test_multipart_whose_job_cannot_be_queued_leaves_nothing(
    make_app, new_org, redis_conn, test_ns, tmp_path, path
):
    """The file is stored and its transcription inserted, then enqueueing fails (the queue's key holds a
    string): the transcription goes, and so do the completed upload and its bytes, which no one could
    ever have named or purged."""
    app = make_app(openai_wait_seconds=0)
    org, headers = new_org("pro")
    queue = org_queue(f"transcriptions-{test_ns}", org.public_id)  # the organization's own queue
    queue_key = f"rq:queue:{queue}"
    redis_conn.set(queue_key, "not a list")
    try:
        response = app.test_client().post(path, data=form_for(path), headers=headers)
    finally:
        redis_conn.delete(queue_key)
        for key in redis_conn.scan_iter(match="rq:job:*"):  # the job hash the failed pipeline still wrote
            if redis_conn.hget(key, "origin") == queue.encode():
                redis_conn.delete(key)
    assert response.status_code == 500
    with app.app_context():
        assert Transcription.select().count() == 0
        assert Upload.select().count() == 0
    assert stored_files(tmp_path) == []


def test_multipart_body_holds_a_slot_until_stored(app, new_org):
    """Free plan, one slot: while a multipart body is coming in, a presign and both multipart endpoints
    are refused (429, Retry-After a minute at most: the slot frees when the body is stored, and OpenAI's
    SDKs gave up on the hour the reservation has) without their bodies being read; once the file is
    stored the slot is free."""
    _, headers = new_org("free")
    client = app.test_client()
    held, thread, answers = send_held(app, "/v1/transcriptions", headers)
    try:
        assert held.reading.wait(10)
        refused = presign(client, headers)
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "CONCURRENT_UPLOAD_LIMIT"
        assert int(refused.headers["Retry-After"]) == 60
        for path in MULTIPART_PATHS:
            other, other_thread, other_answers = send_held(app, path, headers)
            other.release.set()
            other_thread.join(10)
            assert other_answers[0].status_code == 429
            assert other_answers[0].headers["Retry-After"].isdigit()
            assert "concurrent upload" in other_answers[0].get_json()["error"]["message"]
            assert not other.reading.is_set()  # refused before its body was read
    finally:
        held.release.set()
        thread.join(30)
    assert answers[0].status_code == 202, answers[0].get_json()
    assert presign(client, headers).status_code == 201


def test_three_multipart_uploads_at_once_on_the_free_plan(app, new_org):
    """One slot, three bodies on their way: one is read and accepted, two refused unread."""
    _, headers = new_org("free")
    sent = [send_held(app, "/v1/transcriptions", headers) for _ in range(3)]
    try:
        wait_for(lambda: all(body.reading.is_set() or answers for body, _, answers in sent))
        reading = [body for body, _, _ in sent if body.reading.is_set()]
        refused = [answers[0].status_code for _, _, answers in sent if answers]
        assert len(reading) == 1 and refused == [429, 429]
    finally:
        for body, thread, _ in sent:
            body.release.set()
            thread.join(30)
    assert sorted(answers[0].status_code for _, _, answers in sent) == [202, 429, 429]


def test_cap_retry_after_is_until_the_oldest_reservation_expires(client, app, new_org):
    _, headers = new_org("enterprise", custom_concurrent_uploads=2)
    first = presign(client, headers).get_json()["id"]
    assert presign(client, headers).status_code == 201
    with app.app_context():
        Upload.update(expires_at=utcnow() + dt.timedelta(seconds=30)).where(
            Upload.public_id == first
        ).execute()
    refused = presign(client, headers)
    assert refused.status_code == 429
    assert 28 <= int(refused.headers["Retry-After"]) <= 30
    with app.app_context():  # when it says, the slot is free: an expired reservation no longer counts
        Upload.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
            Upload.public_id == first
        ).execute()
    assert presign(client, headers).status_code == 201


def test_busy_reservation_lock_is_503_with_retry_after(client, new_org, redis_conn, test_ns, monkeypatch):
    org, headers = new_org("pro")
    monkeypatch.setattr(upload_service, "LOCK_TIMEOUT_S", 0.2)  # how long presign waits for the lock
    other = redis_conn.lock(f"{test_ns}:lock:uploads:{org.public_id}", timeout=30)
    assert other.acquire(blocking=False)
    try:
        response = presign(client, headers)
    finally:
        other.release()
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"] == "5"
    assert presign(client, headers).status_code == 201


def test_presign_content_type_must_be_audio_or_video(client, new_org):
    _, headers = new_org("enterprise")
    for refused in (
        "text/html",
        "image/png",
        "not a mime type",
        "audio/*",
        "audio/mpeg\r\nX-A: 1",
        "audio/ mpeg",
    ):
        response = presign(client, headers, content_type=refused)
        assert response.status_code == 422, refused
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"] == {"field": "content_type"}
    for accepted in (
        "audio/mpeg",
        "Audio/MPEG",
        "video/quicktime",
        "application/octet-stream",
        "application/ogg",
    ):
        response = presign(client, headers, content_type=accepted)
        assert response.status_code == 201, accepted
        assert response.get_json()["headers"]["Content-Type"] == accepted
    webm = presign(client, headers, "memo.webm", "audio/webm;codecs=opus")  # what browsers record
    assert webm.status_code == 201


def test_mpga_is_mp3(make_app, client, new_org):
    app = make_app(openai_wait_seconds=0)
    _, headers = new_org("pro")
    response = app.test_client().post(
        "/v1/audio/transcriptions", data=form_for("/v1/audio/transcriptions", "talk.mpga"), headers=headers
    )
    # accepted and queued (no worker here: still running once the wait is over)
    assert response.status_code == 504, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "transcription_pending"
    assert upload_file(client, headers, JFK_MP3, "talk.mpga").startswith("upl_")  # completed: probed


def test_openapi_documents_retry_after(client):
    paths = client.get("/v1/openapi.json").get_json()["paths"]
    assert "Retry-After" in paths["/v1/uploads/presigned"]["post"]["responses"]["503"]["headers"]
    assert "Retry-After" in paths["/v1/audio/transcriptions"]["post"]["responses"]["429"]["headers"]
