"""OnnxWhisper against CTranslate2 on the real tiny.en model and the jfk recording."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from inference.ct2_reader import read_ct2_model
from inference.export import default_source
from inference.model import KVCache, OnnxWhisper
from tests.inference.exported_model import JFK, ct2_reference, exported_model_dir


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return exported_model_dir()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return ct2_reference(tmp_path_factory.mktemp("ct2"))


@pytest.fixture(scope="module")
def fp32(model_dir) -> OnnxWhisper:
    return OnnxWhisper(model_dir, precision="fp32", device="cpu", threads=2)


def greedy(model: OnnxWhisper, mel: np.ndarray, prompt: list[int], max_tokens: int = 100) -> list[int]:
    """Greedy decoding as CTranslate2 does it: the model's suppress ids, blank suppressed at the start."""
    config = model.config
    cross = model.encode(mel)
    logits, cache = model.decode([prompt], None, cross)
    tokens: list[int] = []
    for step in range(max_tokens):
        scores = logits[0].copy()
        scores[list(config.suppress_ids)] = -np.inf
        if step == 0:
            scores[list(config.suppress_ids_begin)] = -np.inf
        token = int(scores.argmax())
        if token == config.eot:
            break
        tokens.append(token)
        logits, cache = model.decode([[token]], cache, cross)
    return tokens


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def expected_jfk_text() -> str:
    transcripts = json.loads((JFK.parent / "transcripts.json").read_text())
    return transcripts["jfk.flac"]["text"]


def test_auto_on_a_cpu_machine_is_fp32_on_cpu(model_dir):
    model = OnnxWhisper(model_dir, device="cpu")
    assert model.provider == "CPUExecutionProvider"
    assert model.precision == "fp32"
    assert model.config.n_text_layer == 4


def test_encoder_matches_ctranslate2(fp32, reference):
    cross = fp32.encode(reference["mel"])
    assert cross.k.shape == (4, 1, 6, 1500, 64)
    hidden = reference["encoder"][0]  # [1500, 384] from ctranslate2
    weights = read_ct2_model(default_source() / "model.bin")
    for layer in range(4):
        prefix = f"decoder/layer_{layer}/attention/linear_1"
        kv = hidden @ weights.get(prefix + "/weight").T + weights.get(prefix + "/bias")
        k, v = (t.reshape(1500, 6, 64).transpose(1, 0, 2) for t in np.split(kv, 2, axis=-1))
        np.testing.assert_allclose(cross.k[layer, 0], k, atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(cross.v[layer, 0], v, atol=2e-3, rtol=1e-3)


def test_fp32_greedy_reproduces_ctranslate2_tokens(fp32, reference):
    assert greedy(fp32, reference["mel"], reference["prompt"]) == reference["greedy_tokens"]


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_reduced_precision_gives_the_jfk_text(model_dir, reference, precision):
    model = OnnxWhisper(model_dir, precision=precision, device="cpu", threads=2)
    assert model.precision == precision
    text = Tokenizer.from_file(str(model_dir / "tokenizer.json")).decode(
        greedy(model, reference["mel"], reference["prompt"])
    )
    assert words(text) == words(expected_jfk_text())


def test_prefill_equals_step_by_step(fp32, reference):
    cross = fp32.encode(reference["mel"])
    sequence = reference["prompt"] + reference["greedy_tokens"][:4]
    prefill_logits, prefill_cache = fp32.decode([sequence], None, cross)
    cache = None
    for token in sequence:
        logits, cache = fp32.decode([[token]], cache, cross)
    assert cache.length == prefill_cache.length == len(sequence)
    np.testing.assert_allclose(prefill_logits, logits, atol=1e-3)
    np.testing.assert_allclose(np.stack(prefill_cache.k), np.stack(cache.k), atol=1e-4)


def test_beams_can_share_the_windows_cross_kv(fp32, reference):
    cross = fp32.encode(reference["mel"])
    tokens = np.array([reference["prompt"] + [843], reference["prompt"] + [1002]])
    shared, shared_cache = fp32.decode(tokens, None, cross)
    repeated, repeated_cache = fp32.decode(tokens, None, cross.repeat(2))
    np.testing.assert_allclose(shared, repeated, atol=1e-4)
    np.testing.assert_allclose(np.stack(shared_cache.v), np.stack(repeated_cache.v), atol=1e-5)
    assert not np.allclose(shared[0], shared[1])


def test_cache_reorder_follows_beam_indices(fp32, reference):
    cross = fp32.encode(reference["mel"])
    tokens = np.array([reference["prompt"] + [843], reference["prompt"] + [1002]])
    _, cache = fp32.decode(tokens, None, cross)
    reordered = cache.reorder([1, 1, 0])
    assert isinstance(reordered, KVCache) and reordered.batch_size == 3 and reordered.length == 3
    for layer in range(4):
        np.testing.assert_array_equal(reordered.k[layer][2], cache.k[layer][0])
        np.testing.assert_array_equal(reordered.v[layer][0], cache.v[layer][1])
    logits, _ = fp32.decode([[50], [50], [50]], reordered, cross)
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_alignment_weights_move_forward_in_time(fp32, reference):
    cross = fp32.encode(reference["mel"])
    tokens = reference["prompt"] + reference["greedy_tokens"] + [fp32.config.eot]
    weights = fp32.align(tokens, cross)
    assert weights.shape == (len(fp32.config.alignment_heads), len(tokens), 1500)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-4)
    peaks = weights.mean(axis=0)[2:-1].argmax(axis=-1)  # text tokens only
    assert peaks[-1] > peaks[0] + 200  # about 11 s of speech: the last word is attended well after the first
    assert np.mean(np.diff(peaks) >= 0) > 0.7


def test_mismatched_batches_are_refused(fp32, reference):
    cross = fp32.encode(reference["mel"]).repeat(2)
    with pytest.raises(ValueError, match="batch mismatch"):
        fp32.decode([[1], [2], [3]], None, cross)


def test_concurrent_decoding_from_threads_gives_the_same_tokens(fp32, reference):
    results: list[list[int]] = []

    def work() -> None:
        results.append(greedy(fp32, reference["mel"], reference["prompt"], max_tokens=8))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [reference["greedy_tokens"][:8]] * 3


def test_warm_up_runs_every_decoder_shape_up_to_the_context(model_dir):
    model = OnnxWhisper(model_dir, precision="int8", device="cpu", threads=2)
    shapes = set()
    decode = model.decode

    def recording(tokens, cache, cross):
        tokens = np.asarray(tokens)
        shapes.add((tokens.shape, 0 if cache is None else cache.length))
        return decode(tokens, cache, cross)

    model.decode = recording
    model.warm_up(beam_sizes=(1, 3))
    n_ctx = model.config.n_text_ctx
    assert {length for (_, length) in shapes if length} >= set(range(1, n_ctx))  # each cached length
    assert ((1, n_ctx // 2), 0) in shapes  # the longest prompt
    assert ((3, 1), n_ctx - 1) in shapes  # a step that fills the context, at the other beam size
