"""Read a CTranslate2 `model.bin` into numpy arrays, so the exporter needs neither torch nor ctranslate2.

Layout (ctranslate2 `specs/model_spec.py::_serialize`): uint32 binary version, spec name and revision
(version >= 2), variables (name, rank, shape, dtype id, byte count, bytes), then aliases (name -> name).
int8 weights come with a `<name>_scale` variable and are dequantized here (w = q / scale).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CTranslate2 DataType ids, in order: float32, int8, int16, int32, float16, bfloat16.
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


@dataclass(frozen=True)
class CT2Model:
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        """A variable as float32 (float16/bfloat16 widened, int8 dequantized with its scale)."""
        value = self.variables[name]
        if value.dtype == np.int8:
            scale = self.variables.get(name + "_scale")
            if scale is None:
                raise CT2FormatError(f"int8 variable {name} has no {name}_scale")
            scale = _to_float32(scale)
            shape = (-1,) + (1,) * (value.ndim - 1) if scale.ndim else ()
            return value.astype(np.float32) / scale.reshape(shape)
        return _to_float32(value)

    def __contains__(self, name: str) -> bool:
        return name in self.variables


def _to_float32(value: np.ndarray) -> np.ndarray:
    if value.dtype == np.uint16:  # bfloat16, kept as raw bits
        return (value.astype(np.uint32) << 16).view(np.float32)
    return value.astype(np.float32, copy=False)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise CT2FormatError("truncated model.bin")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (length,) = self.unpack("<H")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise CT2FormatError("truncated model.bin")
        view = memoryview(self.data)[self.pos : self.pos + size]
        self.pos += size
        return view


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse model.bin; aliases resolve to the same arrays as the variables they name."""
    data = Path(path).read_bytes()
    cur = _Cursor(data)
    (version,) = cur.unpack("<I")
    if not 1 <= version <= 6:
        raise CT2FormatError(f"unsupported CTranslate2 binary version {version}")
    spec_name, revision = "", 1
    if version >= 2:
        spec_name = cur.string()
        (revision,) = cur.unpack("<I")
    (count,) = cur.unpack("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = cur.string()
        (rank,) = cur.unpack("<B")
        shape = cur.unpack(f"<{rank}I") if rank else ()
        if version >= 4:
            (type_id,) = cur.unpack("<B")
            if type_id >= len(_DTYPES):
                raise CT2FormatError(f"unknown dtype id {type_id} for {name}")
            dtype_name = _DTYPES[type_id]
            (num_bytes,) = cur.unpack("<I")
        else:
            (item_size,) = cur.unpack("<B")
            dtype_name = {4: "float32", 2: "int16", 1: "int8"}[item_size]
            (num_items,) = cur.unpack("<I")
            num_bytes = num_items * item_size
        dtype = np.uint16 if dtype_name == "bfloat16" else np.dtype(dtype_name)
        raw = cur.take(num_bytes)
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if version >= 3:
        (alias_count,) = cur.unpack("<I")
        for _ in range(alias_count):
            alias = cur.string()
            target = cur.string()
            variables[alias] = variables[target]
    return CT2Model(spec_name=spec_name, revision=revision, variables=variables)
