"""Shared by the engine tests: our engine and faster-whisper (in .venv-ref) on the same samples, cached.

Both sides get the very same 16 kHz float32 array (decoded once by inference.audio and saved as .npy), so
any difference comes from decoding, not from resampling. Results are cached for the whole pytest process
(reference runs take seconds per clip).
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import jiwer
import numpy as np

import inference.transcribe as transcribe_module
from inference.audio import decode_audio
from inference.transcribe import WhisperEngine
from inference.types import TranscribeOptions
from tests.inference.exported_model import REF_PYTHON, ROOT, exported_model_dir
from tests.media import AUDIO_DIR

AUDIO = AUDIO_DIR
TRANSCRIPTS = json.loads((AUDIO / "transcripts.json").read_text())
CLIPS = ("jfk.flac", "jfk.mp3", "stereo_diarization.wav", "multilingual.mp3", "hotwords.mp3")
_WORK = Path(tempfile.mkdtemp(prefix="engine-ref-"))
atexit.register(shutil.rmtree, _WORK, True)


def stream_longer_than(monkeypatch, seconds: float, chunk_seconds: float | None = None) -> None:
    """Make the engine stream files longer than `seconds` (in chunks of `chunk_seconds`), so the shared
    clips of a few seconds take the path of hours of audio."""
    monkeypatch.setattr(transcribe_module, "STREAM_MIN_SECONDS", seconds)
    if chunk_seconds is not None:
        monkeypatch.setattr(transcribe_module, "STREAM_CHUNK_SECONDS", chunk_seconds)


def normalize(text: str) -> str:
    """Lower case, no punctuation, single spaces: for text comparisons only."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def wer(truth: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(truth), normalize(hypothesis))


def ground_truth(clip: str) -> str:
    entry = TRANSCRIPTS[clip]
    if "left" in entry:
        return entry["left"] + " " + entry["right"]
    return entry.get("text") or entry["text_en"]


@lru_cache
def clip_array(clip: str) -> Path:
    """The clip decoded (mono mix) by our audio module, saved as .npy for both sides."""
    path = _WORK / (clip + ".npy")
    np.save(path, decode_audio(AUDIO / clip))
    return path


@lru_cache
def engine(precision: str) -> WhisperEngine:
    return WhisperEngine.load(exported_model_dir(), precision=precision, device="cpu", threads=2)


@lru_cache
def ours(precision: str, beam_size: int, word_timestamps: bool = True) -> dict:
    """clip -> list of segments of our engine."""
    options = TranscribeOptions(beam_size=beam_size, word_timestamps=word_timestamps)
    out = {}
    for clip in CLIPS:
        segments, _ = engine(precision).transcribe(np.load(clip_array(clip)), options)
        out[clip] = list(segments)
    return out


@lru_cache
def reference(compute_type: str, beam_size: int, word_timestamps: bool = True) -> dict:
    """clip -> faster-whisper's result dict (segments, text) with the same options and samples."""
    options = json.dumps({"beam_size": beam_size, "word_timestamps": word_timestamps})
    return reference_with(options, CLIPS, compute_type)


@lru_cache
def reference_with(options: str, clips: tuple[str, ...], compute_type: str = "float32") -> dict:
    """clip -> faster-whisper's result with `options` (JSON of transcribe keyword arguments)."""
    files = [str(clip_array(clip)) for clip in clips]
    proc = subprocess.run(
        [str(REF_PYTHON), str(ROOT / "tests/reference/fw_reference.py"), "--compute-type", compute_type]
        + ["--options", options, *files],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result = json.loads(proc.stdout)["files"]
    return {clip: result[str(clip_array(clip))] for clip in clips}
