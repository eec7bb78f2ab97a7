"""Is an uploaded object really audio/video? A header probe with PyAV (through inference.audio)."""

from __future__ import annotations

import re
from pathlib import Path

from api.errors import ApiError
from cliptext.errors import ErrorCode

# The formats we accept, by file extension (what clients name) and the MIME types they send.
ALLOWED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "mp3": ("audio/mpeg", "audio/mp3"),
    "mpga": ("audio/mpeg", "audio/mp3"),  # MP3 under the name OpenAI's endpoint also takes
    "wav": ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"),
    "mp4": ("video/mp4", "audio/mp4", "application/mp4"),
    "m4a": ("audio/mp4", "audio/x-m4a", "audio/m4a"),
    "flac": ("audio/flac", "audio/x-flac"),
    "ogg": ("audio/ogg", "application/ogg", "application/x-ogg", "audio/vorbis", "audio/opus"),
    "oga": ("audio/ogg", "application/ogg"),  # Ogg audio (Telegram's voice notes; OpenAI takes it)
    "opus": ("audio/opus", "audio/ogg"),
    "webm": ("audio/webm", "video/webm"),
    "mov": ("video/quicktime",),
    "mkv": ("video/x-matroska", "audio/x-matroska"),
    "aac": ("audio/aac", "audio/x-aac"),
    "mpeg": ("video/mpeg", "audio/mpeg"),
}


# Content types a presigned upload may declare: any audio or video type, bytes of no stated type, and
# the few application/ types real uploaders send for the extensions above (Ogg's, MP4's).
_ANY_SUBTYPE = ("audio", "video")
_APPLICATION_TYPES = frozenset(
    {"application/octet-stream"}
    | {t for types in ALLOWED_EXTENSIONS.values() for t in types if t.startswith("application/")}
)
# RFC 9110 media-type: type "/" subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] ), ASCII
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*")


def extension_of(filename: str) -> str:
    return Path(filename).suffix.lower().lstrip(".")


def check_format(filename: str, field: str = "filename") -> str:
    """The lower-case extension of `filename`, or 422 VALIDATION_ERROR naming the allowed ones."""
    ext = extension_of(filename)
    if ext not in ALLOWED_EXTENSIONS:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "Invalid file format",
            {"field": field, "allowed": sorted(ALLOWED_EXTENSIONS)},
        )
    return ext


def check_content_type(content_type: str, field: str = "content_type") -> None:
    """422 VALIDATION_ERROR unless `content_type` is a well-formed audio/video media type (or one of the
    few others real uploaders send): it is stored, echoed in the PUT's headers and signed into S3's URL."""
    match = _MEDIA_TYPE.fullmatch(content_type)
    essence = f"{match[1]}/{match[2]}".lower() if match else ""
    kind, _, subtype = essence.partition("/")
    if not match or subtype == "*" or (kind not in _ANY_SUBTYPE and essence not in _APPLICATION_TYPES):
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "content_type must be an audio/* or video/* media type, or application/octet-stream",
            {"field": field},
        )


def verify_media(path: Path, max_seconds: float) -> float | None:
    """Probe `path`; returns its duration. 422 UNSUPPORTED_MEDIA unless it has an audio stream."""
    from inference.audio import probe_media
    from inference.types import AudioError

    try:
        info = probe_media(str(path))
    except AudioError as error:
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA, "The uploaded file is not a readable audio or video file"
        ) from error
    if not info.has_audio:
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA,
            "The uploaded file has no audio stream",
            {"has_video": info.has_video, "container": info.container},
        )
    if info.duration is not None and info.duration > max_seconds:
        raise ApiError(
            ErrorCode.AUDIO_TOO_LONG,
            f"Audio is longer than the {max_seconds:.0f} s allowed",
            {"duration": info.duration, "max_seconds": max_seconds},
        )
    return info.duration
