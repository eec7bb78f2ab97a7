"""Derive the int8 (CPU) and fp16 (GPU) graphs from the fp32 ones."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

# protobuf cannot serialize a message over 2 GiB: bigger graphs (medium, large) keep weights in a side file
EXTERNAL_DATA_BYTES = 1_800_000_000


SENSITIVE_PREFIXES = ("encoder/layer_0/",)


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save, with weights in `<name>.data` beside the graph when the model is too big for one protobuf."""
    if weight_bytes(model) > EXTERNAL_DATA_BYTES:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
    else:
        onnx.save_model(model, str(path))


def to_int8(model: onnx.ModelProto, path: Path, work: Path, per_channel: bool = False) -> None:
    """Dynamic int8 quantization of the MatMul weights; convolutions stay fp32 (int8 conv is slower).

    The first encoder layer stays fp32 too: its activations have outliers that per-tensor int8 clips
    (measured on jfk: it alone takes the cross K/V max error from 5.0 to 0.6).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = work / (path.stem + ".src.onnx")
    big = weight_bytes(model) > EXTERNAL_DATA_BYTES
    save_model(model, src)
    quantize_dynamic(
        str(src),
        str(path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        nodes_to_exclude=[n.name for n in model.graph.node if n.name.startswith(SENSITIVE_PREFIXES)],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        use_external_data_format=big,
    )
    src.unlink()
    Path(str(src) + ".data").unlink(missing_ok=True)


def to_int8_weight_only(model: onnx.ModelProto, path: Path) -> None:
    """8-bit weight-only MatMuls (MatMulNBits, int8 compute) for the decoder.

    Dynamic quantization re-quantizes the activations of every MatMul at every step, which at one to
    five tokens costs more than the MatMul; it also clipped enough on the German half of
    multilingual.mp3 to send greedy decoding into gibberish and temperature fallbacks (19 s vs 3.5 s).
    Block-wise (32) symmetric weights with accuracy_level 4 keep the fp32 text and are the fastest
    step measured (bench/model_step.py).
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    # the module sets its logger to INFO on import: one line per MatMul it skips
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=32, is_symmetric=True, accuracy_level=4, algo_config=config
    )
    quantizer.process()
    save_model(quantizer.model.model, path)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, float32 inputs/outputs so callers need not care."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
