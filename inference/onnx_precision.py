"""Derive the int8 (CPU) and fp16 (GPU) graphs from the fp32 ones."""

from __future__ import annotations

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


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, float32 inputs/outputs so callers need not care."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
