"""Generates the Python gRPC stubs from protos/ into the package `inference.proto`.

The stubs are build output (gitignored), never edited by hand: `make setup` runs this module, and
`ensure_stubs()` regenerates them on import when the .proto files, grpcio-tools or this generator
changed (a hash kept in inference/proto/.stamp), so they cannot drift from the contract.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"
OUT_DIR = Path(__file__).resolve().parent / "proto"
PACKAGE = "inference.proto"
STAMP = ".stamp"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto file under the root, sorted so the hash is stable."""
    return sorted(proto_root.rglob("*.proto"))


def sources_hash(proto_root: Path = PROTO_ROOT) -> str:
    """Hash of the .proto sources alone (computable where the generator is not installed)."""
    digest = hashlib.sha256()
    for path in proto_files(proto_root):
        digest.update(str(path.relative_to(proto_root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(proto_root: Path = PROTO_ROOT) -> str:
    """Hash of the .proto sources, the generator's version and this module's code."""
    digest = hashlib.sha256()
    digest.update(importlib.metadata.version("grpcio-tools").encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(sources_hash(proto_root).encode())
    return digest.hexdigest()


def _rewrite_imports(path: Path, top_packages: set[str]) -> None:
    """Make `from cliptext.inference.v1 import x_pb2` import from inside `inference.proto`."""
    pattern = re.compile(rf"^(from|import) ({'|'.join(map(re.escape, sorted(top_packages)))})\.", re.M)
    text = path.read_text()
    path.write_text(pattern.sub(rf"\1 {PACKAGE}.\2.", text))


def generate(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> None:
    """Run protoc (grpc_tools) for every .proto file and put the package in place atomically."""
    from grpc_tools import protoc

    files = proto_files(proto_root)
    if not files:
        raise RuntimeError(f"no .proto files under {proto_root}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".proto-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        well_known = importlib.resources.files("grpc_tools") / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            *(str(path) for path in files),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(map(str, files)))
        top_packages = {path.relative_to(proto_root).parts[0] for path in files}
        for generated in staging.rglob("*.py*"):
            _rewrite_imports(generated, top_packages)
        for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
        (staging / STAMP).write_text(fingerprint(proto_root) + "\n" + sources_hash(proto_root) + "\n")
        retired = None
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=".proto-old-", dir=out_dir.parent))
            out_dir.rename(retired / "proto")
        staging.rename(out_dir)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def is_fresh(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> bool:
    """True when the stubs exist and were generated from the current sources."""
    stamp = out_dir / STAMP
    return stamp.exists() and stamp.read_text().split()[:1] == [fingerprint(proto_root)]


def ensure_stubs(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> None:
    """Regenerate the stubs if missing or stale; safe when several processes start at once."""
    if not proto_root.is_dir():
        return  # an installed package without the sources: use the stubs it ships
    if (out_dir / STAMP).exists() and importlib.util.find_spec("grpc_tools") is None:
        # a runtime image without the generator: use the stubs built with the image, unless they are stale
        built_from = (out_dir / STAMP).read_text().split()[1:2]
        if built_from != [sources_hash(proto_root)]:
            raise RuntimeError(
                f"the gRPC stubs in {out_dir} were not built from the .proto files in {proto_root}, and "
                "grpcio-tools is not installed to rebuild them"
            )
        return
    if is_fresh(out_dir, proto_root):
        return
    key = hashlib.sha256(str(out_dir).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"cliptext-proto-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_fresh(out_dir, proto_root):
            generate(out_dir, proto_root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output package directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if the stubs are missing or stale")
    args = parser.parse_args(argv)
    if args.check:
        fresh = is_fresh(args.out)
        print("stubs are up to date" if fresh else "stubs are missing or stale", file=sys.stderr)
        return 0 if fresh else 1
    generate(args.out)
    print(f"generated {PACKAGE} stubs in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
