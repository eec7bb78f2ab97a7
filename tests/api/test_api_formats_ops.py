"""Transcript formats, the OpenAI endpoint's early answers, job meta, /metrics and /admin/rq (in-process app).

The end-to-end runs (real worker and inference server, the official openai package) are in tests/ops.
"""

from __future__ import annotations

import base64
import re

from rq.job import Job

from api.models import Segment, Transcription, TranscriptionStatus, utcnow
from api.queue import REQUEST_ID_META
from tests.api.helpers import JFK_MP3, upload_file

SEGMENTS = [
    (0.0, 4.0, " And so my fellow Americans,", [(0.0, 0.4, " And"), (0.5, 0.9, " so"), (1.0, 3.9, " my")]),
    (4.0, 11.0, " ask not what your country can do for you.", [(4.0, 4.5, " ask"), (4.6, 10.9, " not")]),
]


def _create(client, headers, **options) -> str:
    upload_id = upload_file(client, headers, JFK_MP3)
    reply = client.post(
        "/v1/transcriptions",
        json={"upload_id": upload_id, **options},
        headers={**headers, "X-Request-Id": "req-formats-1"},
    )
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["id"]


def _complete(app, txn_id: str, words: bool) -> None:
    """What a worker writes when it is done."""
    with app.app_context():
        row = Transcription.get(Transcription.public_id == txn_id)
        for index, (start, end, text, timed) in enumerate(SEGMENTS):
            Segment.create(
                transcription=row,
                index=index,
                start=start,
                end=end,
                text=text,
                words=[{"start": s, "end": e, "word": w, "probability": 0.9} for s, e, w in timed]
                if words
                else None,
                seek=0,
                tokens=[50364, 400, 370],
                temperature=0.0,
                avg_logprob=-0.25,
                compression_ratio=1.3,
                no_speech_prob=0.01,
            )
        row.status, row.text, row.language = (
            TranscriptionStatus.COMPLETED,
            "".join(s[2] for s in SEGMENTS),
            "en",
        )
        row.duration, row.completed_at = 11.0, utcnow()
        row.save()


def test_formats_by_parameter_and_by_accept_header(client, app, new_org):
    _, headers = new_org("pro")
    txn_id = _create(client, headers)
    url = f"/v1/transcriptions/{txn_id}"
    queued = client.get(f"{url}?format=srt", headers=headers)
    assert queued.status_code == 409 and queued.get_json()["error"]["code"] == "CONFLICT"
    _complete(app, txn_id, words=False)

    text = client.get(f"{url}?format=text", headers=headers)
    assert text.status_code == 200 and text.mimetype == "text/plain"
    assert (
        text.get_data(as_text=True)
        == "And so my fellow Americans, ask not what your country can do for you.\n"
    )

    srt = client.get(url, headers={**headers, "Accept": "application/x-subrip"})
    assert srt.mimetype == "application/x-subrip"
    assert srt.get_data(as_text=True).startswith(
        "1\n00:00:00,000 --> 00:00:04,000\nAnd so my fellow Americans,\n"
    )

    vtt = client.get(url, headers={**headers, "Accept": "text/vtt"})
    assert vtt.mimetype == "text/vtt"
    assert re.match(r"WEBVTT\n\n00:00:00\.000 --> 00:00:04\.000\n", vtt.get_data(as_text=True))

    # a media type's parameters name no other format: what the API sends back may be asked for
    for accept, mimetype in [
        ("text/vtt; charset=utf-8", "text/vtt"),
        ("application/x-subrip;charset=UTF-8", "application/x-subrip"),
        ("text/plain; format=flowed, application/json;q=0.5", "text/plain"),
        ("text/vtt; charset=utf-8; q=0.2, application/json", "application/json"),
    ]:
        answer = client.get(url, headers={**headers, "Accept": accept})
        assert (answer.status_code, answer.mimetype) == (200, mimetype), accept

    # the parameter wins over Accept; json is the resource itself
    resource = client.get(f"{url}?format=json", headers={**headers, "Accept": "text/vtt"})
    assert resource.mimetype == "application/json" and resource.get_json()["id"] == txn_id

    verbose = client.get(f"{url}?format=verbose_json", headers=headers).get_json()
    assert (verbose["task"], verbose["language"], verbose["duration"]) == ("transcribe", "en", 11.0)
    assert "words" not in verbose
    first = verbose["segments"][0]
    assert set(first) == {
        "id", "seek", "start", "end", "text", "tokens", "temperature",
        "avg_logprob", "compression_ratio", "no_speech_prob",
    }  # fmt: skip
    assert first["tokens"] == [50364, 400, 370] and first["avg_logprob"] == -0.25

    # words were not asked at creation: a clear error, never an empty list
    words = client.get(f"{url}?format=verbose_json&timestamp_granularities=word", headers=headers)
    assert words.status_code == 409
    assert "word_timestamps" in words.get_json()["error"]["message"]
    assert client.get(f"{url}?format=docx", headers=headers).status_code == 422


def test_verbose_json_words_when_created_with_word_timestamps(client, app, new_org):
    _, headers = new_org("pro")
    txn_id = _create(client, headers, word_timestamps=True)
    _complete(app, txn_id, words=True)
    reply = client.get(
        f"/v1/transcriptions/{txn_id}?format=verbose_json&timestamp_granularities=word"
        "&timestamp_granularities=segment",
        headers=headers,
    )
    body = reply.get_json()
    assert body["words"][:2] == [
        {"word": "And", "start": 0.0, "end": 0.4},
        {"word": "so", "start": 0.5, "end": 0.9},
    ]
    assert len(body["words"]) == 5 and len(body["segments"]) == 2


def test_job_carries_request_id_and_a_timeout_from_the_duration(client, app, new_org, redis_conn):
    _, headers = new_org("pro")
    txn_id = _create(client, headers)
    job = Job.fetch(txn_id, connection=redis_conn)
    assert job.meta[REQUEST_ID_META] == "req-formats-1"
    settings = app.extensions["cliptext"].settings
    # 11 s of audio: base + per-second share + margin, far below the 4 h maximum's limit
    expected = int(settings.job_timeout_base + settings.job_timeout_per_audio_second * 11.0) + 30
    assert abs(job.timeout - expected) <= 2, job.timeout


def test_openai_endpoint_answers_504_past_the_wait_and_errors_in_openai_shape(make_app, new_org):
    """Still running after the wait: an error naming the transcription, not to be retried. A 202 with
    its id was taken by OpenAI's SDKs as the transcript (text formats returned that JSON as the text)."""
    app = make_app(openai_wait_seconds=0.3)  # no worker runs here: the transcription stays queued
    client = app.test_client()
    _, headers = new_org("pro")
    with JFK_MP3.open("rb") as handle:
        reply = client.post(
            "/v1/audio/transcriptions",
            data={"file": (handle, "jfk.mp3", "audio/mpeg"), "model": "whisper-1"},
            headers=headers,
        )
    assert reply.status_code == 504, reply.get_json()
    error = reply.get_json()["error"]
    assert error["code"] == "transcription_pending" and error["type"] == "server_error"
    assert error["transcription_id"].startswith("txn_") and error["transcription_id"] in error["message"]
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["Location"].endswith(f"/v1/transcriptions/{error['transcription_id']}")
    listed = client.get("/v1/transcriptions", headers=headers).get_json()["data"]
    assert [t["id"] for t in listed] == [error["transcription_id"]]

    bad_key = client.post("/v1/audio/transcriptions", headers={"Authorization": "Bearer ct_nope"})
    assert bad_key.status_code == 401
    assert bad_key.get_json()["error"] == {
        "message": "A valid API key is required",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with JFK_MP3.open("rb") as handle:
        bad_format = client.post(
            "/v1/audio/transcriptions",
            data={"file": (handle, "jfk.mp3"), "model": "whisper-1", "response_format": "docx"},
            headers=headers,
        )
    assert bad_format.status_code == 400
    error = bad_format.get_json()["error"]
    assert error["param"] == "response_format" and error["type"] == "invalid_request_error"
    with JFK_MP3.open("rb") as handle:
        words_as_text = client.post(
            "/v1/audio/transcriptions",
            data={"file": (handle, "jfk.mp3"), "model": "m", "timestamp_granularities[]": "word"},
            headers=headers,
        )
    assert words_as_text.status_code == 400
    assert words_as_text.get_json()["error"]["param"] == "timestamp_granularities[]"
    # an unknown method or path under the OpenAI paths: OpenAI's shape too (routing has no blueprint)
    for method, path, status in [
        ("GET", "/v1/audio/transcriptions", 405),
        ("DELETE", "/v1/models/whisper-1", 405),
        ("GET", "/v1/audio/translations", 405),  # POST only: it says translation is not supported
        ("POST", "/v1/audio/speech", 404),
    ]:
        routed = client.open(path, method=method, headers=headers)
        assert routed.status_code == status
        assert set(routed.get_json()["error"]) == {"message", "type", "param", "code"}
    assert "POST" in client.get("/v1/audio/transcriptions", headers=headers).headers["Allow"]
    assert client.get("/v1/nothing", headers=headers).get_json()["error"]["code"] == "NOT_FOUND"
    # elsewhere the Cliptext envelope is unchanged
    assert (
        client.get("/v1/transcriptions", headers={"Authorization": "Bearer ct_nope"}).get_json()["error"][
            "code"
        ]
        == "UNAUTHORIZED"
    )


def _counter(text: str, endpoint: str, method: str, status: str) -> float:
    pattern = (
        rf'^cliptext_api_requests_total\{{endpoint="{re.escape(endpoint)}",method="{method}",'
        rf'status="{status}"\}} ([0-9.e+]+)$'
    )
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_requests(client, new_org):
    _, headers = new_org("pro")
    before = _counter(client.get("/metrics").get_data(as_text=True), "/v1/transcriptions", "GET", "200")
    assert client.get("/v1/transcriptions", headers=headers).status_code == 200
    assert client.get("/v1/transcriptions", headers=headers).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert _counter(text, "/v1/transcriptions", "GET", "200") == before + 2
    assert "cliptext_api_request_duration_seconds_bucket" in text


def test_admin_is_not_mounted_without_credentials(client):
    assert client.get("/admin/rq/").status_code == 404


def test_admin_needs_the_operator_credentials(make_app):
    client = make_app(admin_user="operator", admin_password="s3cret-pw").test_client()
    refused = client.get("/admin/rq/")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"operator:wrong").decode()
    assert client.get("/admin/rq/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"operator:s3cret-pw").decode()}
    page = client.get("/admin/rq/", headers=right)
    assert page.status_code == 200 and b"RQ" in page.data
    cross_site = client.post(
        "/admin/rq/queue/transcriptions/failed/empty",
        headers={**right, "Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    requeue = client.get(
        "/admin/rq/requeue/transcriptions", headers={**right, "Referer": "https://evil.example/"}
    )
    assert requeue.status_code == 403
