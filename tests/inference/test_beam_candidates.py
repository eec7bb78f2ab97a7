"""Beam search ranks only the entries that can reach its top k: the same k, in the same order, with the
same float32 values as ranking log_softmax(logits) + scores over the whole array."""

import numpy as np
import pytest

from inference.decoding import beam_candidates, log_softmax

VOCAB = 51864
TIMESTAMP_BEGIN = 50363


def whole_array_ranking(logits: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = (log_softmax(logits) + scores[:, None]).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:k]
    return order, flat[order]


def random_case(rng: np.random.Generator, trial: int) -> tuple[np.ndarray, np.ndarray]:
    beams = int(rng.integers(1, 6))
    logits = (rng.standard_normal((beams, VOCAB)) * rng.uniform(0.5, 8)).astype(np.float32)
    scores = (rng.standard_normal(beams) * 5 - 3).astype(np.float32)
    if trial % 3 == 0:
        logits = np.round(logits, 1)  # many ties, at the k-th place too
    if trial % 4 == 0:
        logits[:, :TIMESTAMP_BEGIN] = -np.inf  # the timestamp rules mask all text
    if trial % 5 == 0 and trial % 4:
        logits[rng.integers(0, beams), TIMESTAMP_BEGIN:] = -np.inf
    if trial % 7 == 0:
        scores[rng.integers(0, beams)] = -1e10  # a beam CTranslate2 keeps but never picks
    if trial % 10 == 0 and beams > 1:
        scores[0] = -np.inf  # a kept candidate that had only masked tokens left
    if trial % 9 == 0:
        logits[:, :2048] -= 40  # the sampled columns are all poor candidates
    return logits, scores


@pytest.mark.parametrize("k", [2, 10])
def test_the_candidates_are_the_whole_arrays_top_k(k: int) -> None:
    rng = np.random.default_rng(1234)
    for trial in range(150):
        logits, scores = random_case(rng, trial)
        top, values = beam_candidates(logits, scores, k)
        expected_top, expected_values = whole_array_ranking(logits, scores, k)
        assert top.tolist() == expected_top.tolist(), trial
        assert values.tobytes() == expected_values.tobytes(), trial  # bit for bit


def test_fewer_finite_entries_than_candidates() -> None:
    logits = np.full((2, VOCAB), -np.inf, dtype=np.float32)
    logits[0, 7] = 1.0
    logits[1, 9] = 2.0
    top, values = beam_candidates(logits, np.zeros(2, np.float32), 4)
    assert top[:2].tolist() == [7, VOCAB + 9]  # a tie: the lower index first
    assert values[0] == 0 and values[1] == 0
    assert np.isneginf(values[2:]).all()
