"""Derive the int8 (CPU) and fp16 (GPU) graphs from the fp32 ones."""

from __future__ import annotations

from pathlib import Path

import onnx


def to_int8(model: onnx.ModelProto, path: Path, work: Path, per_channel: bool = False) -> None:
    """Dynamic int8 quantization of the MatMul weights; convolutions stay fp32 (int8 conv is slower)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = work / (path.stem + ".src.onnx")
    onnx.save_model(model, str(src))
    quantize_dynamic(
        str(src),
        str(path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    src.unlink()


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, float32 inputs/outputs so callers need not care."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
