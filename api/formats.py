"""The output formats of a transcript: which one a request asks for, and the bodies besides plain JSON.

`json` is the TranscriptionSchema (the resource itself); `text`, `srt` and `vtt` are text bodies;
`verbose_json` is OpenAI's verbose transcription object (task, language, duration, text, segments,
words). The `format` query parameter wins over the Accept header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from werkzeug.datastructures import MIMEAccept

from api.errors import ApiError
from api.models import Segment, Transcription, TranscriptionStatus
from cliptext import subtitles
from cliptext.errors import ErrorCode

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")

MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}
# what an Accept header may name, best first when the client ranks them equally
_ACCEPTED = {
    "application/json": "json",
    "text/plain": "text",
    "application/x-subrip": "srt",
    "text/srt": "srt",
    "text/vtt": "vtt",
}


def negotiate(format_param: str | None, accept: MIMEAccept) -> str:
    """The format asked for: `format` if given, else the best Accept match, else json."""
    if format_param:
        return format_param
    if not accept:
        return "json"
    # parameters other than q name no other format ("text/vtt; charset=utf-8" is what we send back);
    # werkzeug matches them exactly, so an offer without them would never be chosen
    bare = MIMEAccept([(value.partition(";")[0].strip(), quality) for value, quality in accept])
    return _ACCEPTED.get(bare.best_match(list(_ACCEPTED)) or "", "json")


def content_type(fmt: str) -> str:
    media = MEDIA_TYPES[fmt]
    return media if media == "application/json" else f"{media}; charset=utf-8"


def require_completed(row: Transcription, fmt: str) -> None:
    """A transcript format needs the whole transcript: 409 while queued/processing, or failed."""
    if row.status != TranscriptionStatus.COMPLETED:
        raise ApiError(
            ErrorCode.CONFLICT,
            f"The `{fmt}` format needs a completed transcription; this one is {row.status}",
            {"status": row.status, "format": fmt},
        )


def require_words(row: Transcription) -> None:
    """Word timings exist only when asked at creation (`word_timestamps`): say so, never an empty list."""
    if not (row.options or {}).get("word_timestamps"):
        raise ApiError(
            ErrorCode.CONFLICT,
            "This transcription was created without word timestamps; "
            "create it with `word_timestamps: true` to get words",
            {"field": "timestamp_granularities", "word_timestamps": False},
        )


def _segment_dicts(segments: Iterable[Segment]) -> list[dict[str, Any]]:
    return [{"start": s.start, "end": s.end, "text": s.text, "words": s.words} for s in segments]


def text_body(row: Transcription) -> str:
    return (row.text or "").strip() + "\n"


def srt_body(segments: Iterable[Segment]) -> str:
    return subtitles.srt(_segment_dicts(segments))


def vtt_body(segments: Iterable[Segment]) -> str:
    return subtitles.vtt(_segment_dicts(segments))


def _verbose_segment(position: int, segment: Segment) -> dict[str, Any]:
    return {
        "id": position,
        "seek": segment.seek or 0,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens or []),
        "temperature": segment.temperature if segment.temperature is not None else 0.0,
        "avg_logprob": segment.avg_logprob if segment.avg_logprob is not None else 0.0,
        "compression_ratio": segment.compression_ratio if segment.compression_ratio is not None else 0.0,
        "no_speech_prob": segment.no_speech_prob if segment.no_speech_prob is not None else 0.0,
    }


def verbose_json(
    row: Transcription, segments: Sequence[Segment], granularities: Iterable[str] = ("segment",)
) -> dict[str, Any]:
    """OpenAI's verbose_json: segments when "segment" is asked, words when "word" is (needs them stored)."""
    wanted = set(granularities) or {"segment"}
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": row.language or "",
        "duration": row.duration or 0.0,
        "text": (row.text or "").strip(),
    }
    if "word" in wanted:
        require_words(row)
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
            for s in segments
            for w in (s.words or [])
        ]
    if "segment" in wanted:
        body["segments"] = [_verbose_segment(i, s) for i, s in enumerate(segments)]
    return body
