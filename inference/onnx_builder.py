"""A thin helper over `onnx.helper` so the whisper graph builders read like the model they describe."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MS_DOMAIN = "com.microsoft"


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; names intermediate values automatically."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple, str] = {}
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> None:
        if value != name:
            self.op("Identity", [value], out=name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def weight(self, name: str, array: np.ndarray) -> str:
        """A named initializer (weights keep their model name, which helps debugging and quantization)."""
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant, shared between uses."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(self._fresh("const"), array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: str | None = None, **attrs):
        """Add a node; returns its output name (or a list when n_out > 1)."""
        domain = attrs.pop("domain", "")
        node_name = attrs.pop("name", "")
        outputs = [out] if out is not None else [self._fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, domain=domain, **attrs))
        return outputs[0] if n_out == 1 else outputs

    # -- common blocks -------------------------------------------------------------------------

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """x @ weight.T + bias, with weight stored [out, in] as CTranslate2 does."""
        y = self.op("MatMul", [x, self.weight(name + ".weight", weight.T.copy())], name=name)
        if bias is not None and np.any(bias):
            y = self.op("Add", [y, self.weight(name + ".bias", bias)])
        return y

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, name: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(name + ".gamma", gamma), self.weight(name + ".beta", beta)],
            axis=-1,
            epsilon=1e-5,
        )

    def gelu(self, x: str) -> str:
        """Exact (erf) GELU as whisper uses."""
        return self.op("Gelu", [x], domain=MS_DOMAIN)

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="cliptext.inference.export")
        model.ir_version = 8
        return model


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
