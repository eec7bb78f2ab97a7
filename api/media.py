"""Is an uploaded object really audio/video? A header probe with PyAV (through inference.audio)."""

from __future__ import annotations

from pathlib import Path

from api.errors import ApiError
from cliptext.errors import ErrorCode

# The formats we accept, by file extension (what clients name) and the MIME types they send.
ALLOWED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "mp3": ("audio/mpeg", "audio/mp3"),
    "wav": ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"),
    "mp4": ("video/mp4", "audio/mp4"),
    "m4a": ("audio/mp4", "audio/x-m4a", "audio/m4a"),
    "flac": ("audio/flac", "audio/x-flac"),
    "ogg": ("audio/ogg", "application/ogg", "audio/vorbis", "audio/opus"),
    "opus": ("audio/opus", "audio/ogg"),
    "webm": ("audio/webm", "video/webm"),
    "mov": ("video/quicktime",),
    "mkv": ("video/x-matroska", "audio/x-matroska"),
    "aac": ("audio/aac", "audio/x-aac"),
    "mpeg": ("video/mpeg", "audio/mpeg"),
}


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
