"""The exporter: files and config per the contract, idempotence, clear failure on a wrong directory."""

from __future__ import annotations

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
