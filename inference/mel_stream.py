"""Log-mel frames of a long file, window by window, with bounded memory and faster-whisper's values.

faster-whisper computes the log-mel of the whole file at once and clamps it at (global max - 8). Here a
first pass over the audio finds that maximum; the second pass computes only the frames a window needs,
from a rolling sample buffer, and applies the same clamp. Every frame sees the same samples as in the
whole-file computation (the neighbours of a chunk are kept as context), so the values agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from inference.features import HOP_LENGTH, FeatureExtractor

_CONTEXT_FRAMES = 2  # frames before the first wanted one, so its window (n_fft/2 back) is real audio
_HALF_WINDOW = 200  # n_fft // 2 samples each side of a frame's centre


class _Frames:
    """Frames [t0, t1) of the global log-mel (FeatureExtractor-normalised per call) from a sample buffer."""

    def __init__(self, extractor: FeatureExtractor):
        self.extractor = extractor
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # sample index of buffer[0]
        self.ended = False

    @property
    def buffer_end(self) -> int:
        return self.buffer_start + self.buffer.shape[0]

    def push(self, samples: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])

    def ready_until(self) -> int:
        """Frames below this index can be computed with the samples received so far."""
        if self.ended:
            return (self.buffer_end + HOP_LENGTH) // HOP_LENGTH
        return max(0, (self.buffer_end - _HALF_WINDOW) // HOP_LENGTH)

    def compute(self, t0: int, t1: int) -> np.ndarray:
        """[n_mels, t1 - t0], each value min-clamped at the local max - 8 (caller re-clamps globally)."""
        first = max(0, t0 - _CONTEXT_FRAMES)
        start = first * HOP_LENGTH
        at_end = self.ended and (t1 + 1) * HOP_LENGTH + _HALF_WINDOW >= self.buffer_end
        end = self.buffer_end if at_end else min(self.buffer_end, (t1 + 1) * HOP_LENGTH + _HALF_WINDOW)
        x = self.buffer[start - self.buffer_start : end - self.buffer_start]
        mel = self.extractor(x, padding=HOP_LENGTH if at_end else 0)
        return mel[:, t0 - first : t1 - first]

    def drop_before(self, t: int) -> None:
        keep_from = max(0, (t - _CONTEXT_FRAMES) * HOP_LENGTH)
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start :].copy()
            self.buffer_start = keep_from


def global_floor(extractor: FeatureExtractor, chunks: Iterator[np.ndarray]) -> tuple[np.float32, int]:
    """First pass: (the normalised clamp value faster-whisper would use, number of samples)."""
    frames = _Frames(extractor)
    top = None
    done = 0
    for chunk in chunks:
        frames.push(chunk)
        ready = frames.ready_until()
        if ready > done:
            top = _max(top, frames.compute(done, ready))
            done = ready
            frames.drop_before(done)
    frames.ended = True
    ready = frames.ready_until()
    if ready > done:
        top = _max(top, frames.compute(done, ready))
    n_samples = frames.buffer_end
    if top is None:
        return np.float32(-np.inf), n_samples
    # the normalised value of (max - 8): (top*4 - 4) is the raw max, up to float rounding
    raw_max = np.float32(top * np.float32(4.0) - np.float32(4.0))
    floor = np.float32((np.float32(raw_max - 8.0) + np.float32(4.0)) / np.float32(4.0))
    return floor, n_samples


def _max(current, mel: np.ndarray):
    if mel.size == 0:
        return current
    value = mel.max()
    return value if current is None else max(current, value)


class WindowFeatures:
    """Second pass: `window(seek, size)` -> mel [n_mels, size] as the whole-file features would hold it."""

    def __init__(self, extractor: FeatureExtractor, chunks: Iterator[np.ndarray], floor: np.float32):
        self._frames = _Frames(extractor)
        self._chunks = chunks
        self._floor = floor

    def window(self, seek: int, size: int) -> np.ndarray:
        frames = self._frames
        while not frames.ended and frames.ready_until() < seek + size:
            chunk = next(self._chunks, None)
            if chunk is None:
                frames.ended = True
            else:
                frames.push(chunk)
        frames.drop_before(seek)
        mel = frames.compute(seek, seek + size)
        return np.maximum(mel, self._floor)


def open_stream(
    extractor: FeatureExtractor, open_chunks: Callable[[], Iterator[np.ndarray]]
) -> tuple[WindowFeatures, int, int]:
    """(window features, content frames, samples) for a source read twice through `open_chunks`."""
    floor, n_samples = global_floor(extractor, open_chunks())
    content_frames = (n_samples + HOP_LENGTH) // HOP_LENGTH - 1
    return WindowFeatures(extractor, open_chunks(), floor), content_frames, n_samples
