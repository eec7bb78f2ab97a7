"""Word timestamps: the same words as faster-whisper, each within 0.1 s of its times."""

from __future__ import annotations

import pytest

from inference.alignment import median_filter, negative_dtw
from tests.inference.reference_runs import CLIPS, ours, reference


@pytest.mark.parametrize("beam_size", [1, 5])
@pytest.mark.parametrize("clip", CLIPS)
def test_words_match_faster_whisper(clip: str, beam_size: int) -> None:
    segments = reference("float32", beam_size)[clip]["segments"]
    # windows decoded by sampling (temperature fallback) are random: compare the ones before
    greedy = next((i for i, s in enumerate(segments) if s["temperature"] > 0), len(segments))
    mine = [w for s in ours("fp32", beam_size)[clip][:greedy] for w in s.words]
    ref = [w for s in segments[:greedy] for w in s["words"]]
    assert [w.word for w in mine] == [w["word"] for w in ref]
    for w, r in zip(mine, ref, strict=True):
        assert w.start == pytest.approx(r["start"], abs=0.1), w
        assert w.end == pytest.approx(r["end"], abs=0.1), w
        assert w.probability == pytest.approx(r["probability"], abs=0.05), w
        assert w.start <= w.end


def test_dtw_follows_the_diagonal_of_a_clear_alignment() -> None:
    import numpy as np

    x = np.full((3, 6), -1.0, dtype=np.float32)
    x[0, 0:2] = x[1, 2:4] = x[2, 4:6] = 1.0
    text, time = negative_dtw(x)
    assert list(text) == [0, 0, 1, 1, 2, 2]
    assert list(time) == [0, 1, 2, 3, 4, 5]


def test_median_filter_reflects_at_the_edges() -> None:
    import numpy as np

    x = np.array([[5.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    out = median_filter(x, 3)
    assert list(out[0]) == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
