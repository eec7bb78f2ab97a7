"""The generated stubs must match the .proto files: regenerate into a temp dir and compare."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

import pytest

from inference import proto_build


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _copy_of_the_protos(tmp_path: Path) -> tuple[Path, Path]:
    """(folder holding a copy of transcriber.proto under tmp_path/protos, an output folder for stubs)."""
    protos = tmp_path / "protos" / "cliptext" / "inference" / "v1"
    protos.mkdir(parents=True)
    source = proto_build.PROTO_ROOT / "cliptext" / "inference" / "v1" / "transcriber.proto"
    (protos / "transcriber.proto").write_bytes(source.read_bytes())
    return protos, tmp_path / "out"


def test_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    proto_build.ensure_stubs()
    fresh = tmp_path / "proto"
    proto_build.generate(fresh)
    current = _files(proto_build.OUT_DIR)
    regenerated = _files(fresh)
    assert sorted(current) == sorted(regenerated)
    drifted = [name for name in current if current[name] != regenerated[name]]
    assert drifted == []
    assert filecmp.cmp(fresh / proto_build.STAMP, proto_build.OUT_DIR / proto_build.STAMP, shallow=False)


def test_a_changed_proto_makes_the_stubs_stale(tmp_path: Path) -> None:
    protos, out = _copy_of_the_protos(tmp_path)
    proto_build.ensure_stubs(out, tmp_path / "protos")
    assert proto_build.is_fresh(out, tmp_path / "protos")
    with (protos / "transcriber.proto").open("a") as handle:
        handle.write("\n// a new comment\n")
    assert not proto_build.is_fresh(out, tmp_path / "protos")
    proto_build.ensure_stubs(out, tmp_path / "protos")
    assert proto_build.is_fresh(out, tmp_path / "protos")


def test_generated_imports_resolve_inside_the_package() -> None:
    grpc_module = proto_build.OUT_DIR / "cliptext" / "inference" / "v1" / "transcriber_pb2_grpc.py"
    text = grpc_module.read_text()
    assert "from inference.proto.cliptext.inference.v1 import transcriber_pb2" in text
    assert "\nfrom cliptext." not in text


def test_without_the_generator_built_stubs_are_used_unless_stale(tmp_path: Path, monkeypatch) -> None:
    """A runtime image has no grpcio-tools: its stubs serve while they match the protos, else it says so."""
    protos, out = _copy_of_the_protos(tmp_path)
    proto_build.ensure_stubs(out, tmp_path / "protos")
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name == "grpc_tools" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    proto_build.ensure_stubs(out, tmp_path / "protos")  # up to date: no generator needed
    with (protos / "transcriber.proto").open("a") as handle:
        handle.write("\n// a new comment\n")
    with pytest.raises(RuntimeError, match="grpcio-tools is not installed"):
        proto_build.ensure_stubs(out, tmp_path / "protos")
