"""Transcript formats over HTTP as their consumers read them (SQLite and PostgreSQL, real Redis).

Segments are written into the database the way a worker writes them, with text whisper may decode
(line ends, arrows, markup, CJK); the SRT and WebVTT bodies are read back by strict readers of the
specifications, and verbose_json by the official openai package's own response model.
"""

from __future__ import annotations

from openai.types.audio import TranscriptionVerbose

from api.models import Segment, Transcription, TranscriptionStatus, utcnow
from cliptext.subtitles import EMPTY_SRT
from tests.api.helpers import JFK_MP3, upload_file
from tests.api.test_formats_review_parsers import parse_srt, parse_vtt

CHINESE = "你好世界我们今天来谈一谈语音识别的问题。" * 3
HOSTILE = [
    (0.0, 2.0, " first line\n\nsecond line"),
    (2.0, 4.0, " an arrow ---> and\r\na carriage return"),
    (4.0, 6.0, " <i>not italic</i> & fish &amp; chips"),
    (6.0, 18.0, CHINESE),
    (18.0, 19.0, " 1\n00:00:30,000 --> 00:00:31,000\nfake cue"),
]


def _transcription(client, app, headers, segments, status=TranscriptionStatus.COMPLETED, **options) -> str:
    upload_id = upload_file(client, headers, JFK_MP3)
    reply = client.post("/v1/transcriptions", json={"upload_id": upload_id, **options}, headers=headers)
    assert reply.status_code == 202, reply.get_json()
    txn_id = reply.get_json()["id"]
    with app.app_context():
        row = Transcription.get(Transcription.public_id == txn_id)
        for index, (start, end, text) in enumerate(segments):
            Segment.create(transcription=row, index=index, start=start, end=end, text=text)
        row.status, row.language, row.duration = status, "en", 19.0
        row.text = "".join(text for _, _, text in segments).strip()
        row.completed_at = utcnow()
        row.save()
    return txn_id


def test_segment_text_whisper_may_decode_is_served_as_valid_subtitles(client, app, new_org):
    _, headers = new_org("pro")
    txn_id = _transcription(client, app, headers, HOSTILE)
    url = f"/v1/transcriptions/{txn_id}"

    srt = client.get(f"{url}?format=srt", headers=headers)
    vtt = client.get(url, headers={**headers, "Accept": "text/vtt"})
    assert srt.headers["Content-Type"] == "application/x-subrip; charset=utf-8"
    assert vtt.headers["Content-Type"] == "text/vtt; charset=utf-8"
    srt_cues = parse_srt(srt.get_data(as_text=True))
    vtt_cues = parse_vtt(vtt.get_data(as_text=True))

    assert [(c.start_ms, c.end_ms) for c in srt_cues] == [(c.start_ms, c.end_ms) for c in vtt_cues]
    assert srt_cues[0].text == vtt_cues[0].text == "first line second line"
    assert vtt_cues[2].text == "<i>not italic</i> & fish &amp; chips"  # escaped, so shown as written
    assert vtt_cues[1].text == "an arrow ---> and a carriage return"
    assert "-->" not in srt_cues[1].text
    chinese = [c for c in vtt_cues if 6000 <= c.start_ms < 18000]
    assert "".join(c.text.replace("\n", "") for c in chinese) == CHINESE
    assert all(len(line) <= 21 for c in chinese for line in c.text.split("\n"))  # 42 columns
    assert " ".join(vtt_cues[-1].text.split()) == "1 00:00:30,000 --> 00:00:31,000 fake cue"
    assert vtt_cues[-1].end_ms == 19000


def test_head_of_each_format_has_the_headers_of_its_get(client, app, new_org):
    _, headers = new_org("pro")
    txn_id = _transcription(client, app, headers, HOSTILE)
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        url = f"/v1/transcriptions/{txn_id}?format={fmt}"
        got, head = client.get(url, headers=headers), client.head(url, headers=headers)
        assert head.status_code == got.status_code == 200
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        assert head.headers["Content-Length"] == str(len(got.get_data())) and head.get_data() == b""


def test_an_empty_transcript_is_a_valid_file_of_each_format(client, app, new_org):
    _, headers = new_org("pro")
    txn_id = _transcription(client, app, headers, [], word_timestamps=True)
    url = f"/v1/transcriptions/{txn_id}"
    # one cue of 1 ms with no text, not an empty file (which ffmpeg cannot open): test_subtitles_followups_s16
    assert client.get(f"{url}?format=srt", headers=headers).get_data(as_text=True) == EMPTY_SRT
    assert client.get(f"{url}?format=vtt", headers=headers).get_data(as_text=True) == "WEBVTT\n\n"
    assert client.get(f"{url}?format=text", headers=headers).get_data(as_text=True) == "\n"
    verbose = client.get(
        f"{url}?format=verbose_json&timestamp_granularities=word&timestamp_granularities=segment",
        headers=headers,
    ).get_json()
    assert verbose["segments"] == [] and verbose["words"] == [] and verbose["text"] == ""


def test_verbose_json_of_segments_without_decoding_details_fits_openais_model(client, app, new_org):
    """Rows written before migration 002 have no seek/tokens/...: the types stay OpenAI's."""
    _, headers = new_org("pro")
    txn_id = _transcription(client, app, headers, HOSTILE[:2])
    body = client.get(f"/v1/transcriptions/{txn_id}?format=verbose_json", headers=headers).get_json()
    parsed = TranscriptionVerbose.model_validate(body, strict=True)
    assert [s.id for s in parsed.segments] == [0, 1]
    for segment in body["segments"]:
        assert type(segment["seek"]) is int and segment["tokens"] == []
        for name in ("start", "end", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"):
            assert type(segment[name]) is float, name
    assert body["segments"][0]["text"] == HOSTILE[0][2]  # as whisper gave it, leading space included


def test_every_transcript_format_of_a_failed_or_canceled_transcription_is_409(client, app, new_org):
    _, headers = new_org("pro")
    for status in (TranscriptionStatus.FAILED, TranscriptionStatus.CANCELED):
        txn_id = _transcription(client, app, headers, [], status=status)
        for fmt in ("text", "srt", "vtt", "verbose_json"):
            reply = client.get(f"/v1/transcriptions/{txn_id}?format={fmt}", headers=headers)
            assert reply.status_code == 409, (status, fmt)
            assert reply.get_json()["error"]["details"] == {"status": status, "format": fmt}
        assert client.get(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 200
