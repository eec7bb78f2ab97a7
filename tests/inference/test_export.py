"""The exporter: files and config per the contract, idempotence, clear failure on a wrong directory."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inference.config import ModelConfig
from inference.ct2_reader import read_ct2_model
from inference.export import default_source
from inference.features import pad_or_trim
from inference.model import OnnxWhisper
from inference.transcribe import WhisperEngine
from inference.types import TranscribeOptions
from tests.inference.exported_model import ROOT


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference.export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def fresh_export(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("models")
    started = time.perf_counter()
    result = run_export("--out", str(out), "--precisions", "fp32,int8")
    assert result.returncode == 0, result.stderr
    return out / "whisper-tiny.en", time.perf_counter() - started


def test_export_writes_contract_files(fresh_export):
    model_dir, seconds = fresh_export
    assert seconds < 60
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == [
        "aligner.fp32.onnx",
        "config.json",
        "decoder.fp32.onnx",
        "decoder.int8.onnx",
        "encoder.fp32.onnx",
        "encoder.int8.onnx",
        "tokenizer.json",
    ]


def test_config_dims_and_special_tokens(fresh_export):
    config = ModelConfig.load(fresh_export[0])
    assert (config.n_mels, config.n_audio_ctx, config.n_audio_state, config.n_audio_layer) == (
        80,
        1500,
        384,
        4,
    )
    assert (config.n_vocab, config.n_text_ctx, config.n_text_head, config.n_text_layer) == (51864, 448, 6, 4)
    assert (config.sot, config.eot, config.no_timestamps, config.timestamp_begin) == (
        50257,
        50256,
        50362,
        50363,
    )
    assert (config.sot_prev, config.sot_lm, config.no_speech) == (50360, 50359, 50361)
    assert (config.translate, config.transcribe) == (50357, 50358)
    assert config.languages["en"] == 50258 and len(config.lang_ids) == 99
    assert not config.is_multilingual
    assert config.sot_sequence == (50257,)
    assert config.precisions == ("fp32", "int8")
    assert (3, 4) in config.alignment_heads and 50357 in config.suppress_ids


def test_graph_inputs_and_outputs_follow_the_contract(fresh_export):
    model_dir = fresh_export[0]

    def names(path: str) -> tuple[list[str], list[str]]:
        session = ort.InferenceSession(model_dir / path, providers=["CPUExecutionProvider"])
        return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]

    assert names("encoder.int8.onnx") == (["mel"], ["cross_k", "cross_v"])
    cache = [n for i in range(4) for n in (f"self_k_{i}", f"self_v_{i}")]
    cross = [n for i in range(4) for n in (f"cross_k_{i}", f"cross_v_{i}")]
    presents = [n for i in range(4) for n in (f"present_k_{i}", f"present_v_{i}")]
    assert names("decoder.fp32.onnx") == (["tokens", *cache, *cross], ["logits", *presents])
    assert names("aligner.fp32.onnx") == (["tokens", "cross_k", "cross_v"], ["alignment"])


def test_second_run_is_skipped_quickly(fresh_export):
    model_dir = fresh_export[0]
    before = (model_dir / "decoder.fp32.onnx").stat().st_mtime_ns
    started = time.perf_counter()
    result = run_export("--out", str(model_dir.parent), "--precisions", "fp32,int8")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert time.perf_counter() - started < 10
    assert (model_dir / "decoder.fp32.onnx").stat().st_mtime_ns == before


def test_directory_without_model_exits_2_with_one_line(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    result = run_export("--from", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.bin" in lines[0]
    assert not (tmp_path / "out").exists()


def test_garbage_model_bin_exits_2(tmp_path):
    shutil.copy(default_source() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    result = run_export("--from", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def test_reader_dequantizes_int8_widens_bfloat16_and_resolves_aliases(tmp_path):
    weight = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    scale = 127.0 / np.abs(weight).max(axis=1)
    quantized = np.round(weight * scale[:, None]).astype(np.int8)
    bf16 = (np.array([1.5, -3.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    variables = [("w", quantized, 1), ("w_scale", scale.astype(np.float32), 0), ("b", bf16, 5)]
    blob = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<I", 3)
    blob += struct.pack("<I", len(variables))
    for name, value, type_id in variables:
        blob += (
            _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        )
        blob += struct.pack("<B", type_id) + struct.pack("<I", value.nbytes) + value.tobytes()
    blob += struct.pack("<I", 1) + _ct2_string("alias") + _ct2_string("b")
    (tmp_path / "model.bin").write_bytes(blob)

    model = read_ct2_model(tmp_path / "model.bin")
    assert model.spec_name == "WhisperSpec"
    np.testing.assert_allclose(model.get("w"), weight, atol=0.01)
    np.testing.assert_array_equal(model.get("alias"), [1.5, -3.0])


def _write_ct2_whisper(directory: Path, n_mels: int, d: int, layers: int, heads: int, n_vocab: int) -> None:
    """A small random whisper in CTranslate2's format, matrices stored int8 + scale (as int8_float16)."""
    rng = np.random.default_rng(0)
    variables: dict[str, np.ndarray] = {}

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        variables[prefix + "/weight"] = rng.normal(0, 0.05, (n_out, n_in)).astype(np.float32)
        variables[prefix + "/bias"] = rng.normal(0, 0.05, n_out).astype(np.float16)

    def norm(prefix: str) -> None:
        variables[prefix + "/gamma"] = np.ones(d, np.float16)
        variables[prefix + "/beta"] = np.zeros(d, np.float16)

    variables["encoder/conv1/weight"] = rng.normal(0, 0.05, (d, n_mels, 3)).astype(np.float16)
    variables["encoder/conv1/bias"] = np.zeros(d, np.float16)
    variables["encoder/conv2/weight"] = rng.normal(0, 0.05, (d, d, 3)).astype(np.float16)
    variables["encoder/conv2/bias"] = np.zeros(d, np.float16)
    variables["encoder/position_encodings/encodings"] = rng.normal(0, 0.1, (1500, d)).astype(np.float16)
    variables["decoder/embeddings/weight"] = rng.normal(0, 0.1, (n_vocab, d)).astype(np.float16)
    variables["decoder/position_encodings/encodings"] = rng.normal(0, 0.1, (448, d)).astype(np.float16)
    for side in ("encoder", "decoder"):
        variables[f"{side}/num_heads"] = np.array(heads, np.int16)
        norm(f"{side}/layer_norm")
        for i in range(layers):
            p = f"{side}/layer_{i}"
            norm(p + "/self_attention/layer_norm")
            linear(p + "/self_attention/linear_0", 3 * d, d)
            linear(p + "/self_attention/linear_1", d, d)
            norm(p + "/ffn/layer_norm")
            linear(p + "/ffn/linear_0", 4 * d, d)
            linear(p + "/ffn/linear_1", d, 4 * d)
            if side == "decoder":
                norm(p + "/attention/layer_norm")
                linear(p + "/attention/linear_0", d, d)
                linear(p + "/attention/linear_1", 2 * d, d)
                linear(p + "/attention/linear_2", d, d)
    type_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    entries = []
    for name, value in variables.items():
        if value.dtype == np.float32:  # quantize matrices like CTranslate2's int8_float16
            scale = 127.0 / np.abs(value).max(axis=1)
            entries.append((name, np.round(value * scale[:, None]).astype(np.int8)))
            entries.append((name + "_scale", scale.astype(np.float32)))
        else:
            entries.append((name, value))
    blob = (
        struct.pack("<I", 6)
        + _ct2_string("WhisperSpec")
        + struct.pack("<I", 3)
        + struct.pack("<I", len(entries))
    )
    for name, value in entries:
        blob += (
            _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        )
        blob += struct.pack("<B", type_ids[value.dtype]) + struct.pack("<I", value.nbytes) + value.tobytes()
    blob += (
        struct.pack("<I", 1)
        + _ct2_string("decoder/projection/weight")
        + _ct2_string("decoder/embeddings/weight")
    )
    directory.mkdir()
    (directory / "model.bin").write_bytes(blob)
    # the large-v3 special tokens (100 languages, <|nospeech|>), as added tokens of a tokenizer.json
    codes = [f"x{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(99)]  # stand-ins for the real codes
    names = ["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in codes] + ["<|yue|>"]
    names[2] = "<|en|>"
    names += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    names += ["<|notimestamps|>", "<|0.00|>"]
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    tokenizer = json.loads((default_source() / "tokenizer.json").read_text())  # a real BPE, other specials
    tokenizer["added_tokens"] = [{"id": 50257 + i, "content": name, **flags} for i, name in enumerate(names)]
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))


def test_exports_a_multilingual_128_mel_int8_quantized_source(tmp_path):
    source = tmp_path / "whisper-small-v3-like"
    _write_ct2_whisper(source, n_mels=128, d=64, layers=2, heads=2, n_vocab=51866)
    result = run_export("--from", str(source), "--out", str(tmp_path / "out"), "--precisions", "fp32")
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "out" / source.name
    config = ModelConfig.load(model_dir)
    assert (config.n_mels, config.n_audio_state, config.n_text_layer, config.n_text_head) == (128, 64, 2, 2)
    assert config.is_multilingual and config.n_vocab == 51866
    assert (config.eot, config.sot, config.languages["en"], config.languages["yue"]) == (
        50257,
        50258,
        50259,
        50358,
    )
    assert (config.translate, config.transcribe, config.no_speech, config.no_timestamps) == (
        50359,
        50360,
        50363,
        50364,
    )
    assert config.timestamp_begin == 50365
    assert config.alignment_heads == ((1, 0), (1, 1))  # no CTranslate2 config: the last half of the layers
    assert config.sot_sequence == (50258, 50259, 50360)

    model = OnnxWhisper(model_dir, device="cpu", threads=1)
    cross = model.encode(np.zeros((1, 128, 3000), np.float32))
    assert cross.k.shape == (2, 1, 2, 1500, 32)
    logits, cache = model.decode([list(config.sot_sequence)], None, cross)
    assert logits.shape == (1, 51866) and np.isfinite(logits).all() and cache.length == 3


def test_language_detection_on_a_multilingual_model(tmp_path):
    """The language tokens' probabilities at <|startoftranscript|>, over the model's own language list."""
    source = tmp_path / "whisper-v3-like"
    _write_ct2_whisper(source, n_mels=128, d=64, layers=2, heads=2, n_vocab=51866)
    result = run_export("--from", str(source), "--out", str(tmp_path / "out"), "--precisions", "fp32")
    assert result.returncode == 0, result.stderr
    engine = WhisperEngine(OnnxWhisper(tmp_path / "out" / source.name, device="cpu", threads=1))
    config = engine.config
    audio = np.random.default_rng(1).normal(0, 0.1, 16000 * 3).astype(np.float32)
    code, probability, ranked = engine.detect_language(audio)

    assert len(ranked) == len(config.language_codes) == 100
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    assert (code, probability) == ranked[0]
    # the same choice made by hand from the decoder's logits at <|startoftranscript|>
    cross = engine.model.encode(pad_or_trim(engine.feature_extractor(audio))[None])
    logits, _ = engine.model.decode([[config.sot]], None, cross)
    by_hand = max(config.languages, key=lambda name: logits[0, config.languages[name]])
    assert code == by_hand
    # and transcribe() with no language given detects it and reports it
    segments, info = engine.transcribe(audio, TranscribeOptions(beam_size=1, temperatures=(0.0,)))
    list(segments)
    assert (info.language, info.language_probability) == (code, pytest.approx(probability))
