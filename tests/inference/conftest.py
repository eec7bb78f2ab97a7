"""Shared fixtures of the inference tests.

Audio generation (tests/media.py makes the files): `media_dir`, `mp4_with_video_path`,
`video_without_audio_path`. Session-scoped, so each file is encoded once per run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import media


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for generated media that lives for the whole test session."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def mp4_with_video_path(media_dir: Path) -> Path:
    """An MP4 with an mpeg4 video track and AAC audio carrying jfk.flac (11 s)."""
    return media.write_mp4_with_video(media_dir / "jfk_video.mp4", clip="jfk.flac")


@pytest.fixture(scope="session")
def video_without_audio_path(media_dir: Path) -> Path:
    """An MP4 with a 2 s video track and no audio track."""
    return media.write_video_only(media_dir / "video_only.mp4", seconds=2.0)
