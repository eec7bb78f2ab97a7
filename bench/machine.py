"""One line about the CPU a benchmark ran on: speed ratios move with it (int8 most: VNNI or not)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def describe() -> str:
    """e.g. 'AMD EPYC (family 25 model 1), 2 cores, avx2 fma'."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor's block is enough
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    flags = set(fields.get("flags", "").split())
    simd = " ".join(flag for flag in SIMD_FLAGS if flag in flags) or "no AVX2"
    return (
        f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model "
        f"{fields.get('model', '?')}), {os.cpu_count()} cores, {simd}"
    )


if __name__ == "__main__":
    print(describe())
