"""The exporter's refusals and housekeeping: one `error:` line and exit 2 for a source or an output it
cannot use, a new export whenever what it read or wrote changed, nothing replaced that is not one of our
exports, and no staging directory left behind by an interrupted export."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference import export as exporter
from inference.config import ModelConfig
from inference.export import default_source
from tests.inference.exported_model import ROOT

NAME = "tiny"


def run_export(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "inference.export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_export(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "inference.export", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and a single `error:` line holding every one of `words`."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def make_source(parent: Path, config: str | None = None, tokenizer: str | None = None) -> Path:
    """A source directory: the bundled model.bin (linked), its config.json and tokenizer.json or the
    given texts."""
    source = parent / "src"
    source.mkdir()
    (source / "model.bin").symlink_to(default_source() / "model.bin")
    for name, text in (("config.json", config), ("tokenizer.json", tokenizer)):
        if text is None:
            shutil.copy(default_source() / name, source / name)
        else:
            (source / name).write_text(text)
    return source


def staging_dirs(out: Path, name: str) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(f".{name}."))


def wait_for_staging(out: Path, name: str, process: subprocess.Popen) -> None:
    """Until the exporter has made its staging directory (it reads the weights first)."""
    deadline = time.monotonic() + 120
    while not (out.is_dir() and staging_dirs(out, name)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no staging directory appeared"
        time.sleep(0.05)


def linked_copy(model_dir: Path, parent: Path) -> Path:
    """A copy of an export made of hard links (instant; the original's files are never modified)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(model_dir, parent / model_dir.name, copy_function=os.link))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    """One fp32 export, into an empty directory made beforehand (which the exporter may replace)."""
    out = tmp_path_factory.mktemp("models")
    (out / NAME).mkdir()
    result = run_export("--from", str(source), "--out", str(out), "--name", NAME, "--precisions", "fp32")
    assert result.returncode == 0, result.stderr
    return out / NAME


# -- B: a source or an output the exporter cannot use ------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        '{"alignment_heads": [[1,0],',  # cut short
        "[1, 2]",  # not an object
        '{"alignment_heads": [1, 2]}',  # not pairs
        '{"alignment_heads": "all"}',
        '{"alignment_heads": [[9, 0], [2, 7]]}',  # tiny has 4 layers of 6 heads
        '{"suppress_ids": [999999], "suppress_ids_begin": [-5]}',  # not token ids of a 51864 vocabulary
    ],
    ids=["corrupt", "list", "flat-heads", "heads-string", "heads-out-of-range", "suppress-out-of-range"],
)
def test_a_bad_source_config_exits_2_naming_it(tmp_path, config):
    src = make_source(tmp_path, config=config)
    result = run_export("--from", str(src), "--out", str(tmp_path / "out"), "--precisions", "fp32")
    assert_refused(result, str(src / "config.json"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "tokenizer",
    ['{"added_tokens": [', '{"added_tokens": [{"id": 50257}]}', "[]"],
    ids=["corrupt", "token-without-content", "list"],
)
def test_a_bad_source_tokenizer_exits_2_naming_it(tmp_path, tokenizer):
    src = make_source(tmp_path, tokenizer=tokenizer)
    result = run_export("--from", str(src), "--out", str(tmp_path / "out"), "--precisions", "fp32")
    assert_refused(result, str(src / "tokenizer.json"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case", ["out-is-a-file", "out-below-a-file", "name-with-slash", "name-dotdot", "name-empty"]
)
def test_an_unusable_output_exits_2(tmp_path, case):
    (tmp_path / "file").write_text("not a directory")
    out, name = {
        "out-is-a-file": (tmp_path / "file", "m"),
        "out-below-a-file": (tmp_path / "file" / "sub", "m"),
        "name-with-slash": (tmp_path / "out", "a/b"),
        "name-dotdot": (tmp_path / "out", ".."),
        "name-empty": (tmp_path / "out", ""),
    }[case]
    result = run_export(
        "--from", str(default_source()), "--out", str(out), "--name", name, "--precisions", "fp32"
    )
    assert_refused(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_missing_source_is_reported_even_where_the_export_exists(exported, tmp_path):
    typo = tmp_path / "typo"
    result = run_export(
        "--from", str(typo), "--out", str(exported.parent), "--name", NAME, "--precisions", "fp32"
    )
    assert_refused(result, str(typo))
    assert ModelConfig.load(exported).name == NAME


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="export-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def other_user() -> tuple[str, ...]:
    """A command prefix under which file permissions apply: root may read and write anything."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is not installed")
    return (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.mark.parametrize("case", ["read-only-out", "unreadable-model-bin"])
def test_permission_errors_exit_2_with_one_line(shared_tmp, case):
    out = shared_tmp / "out"
    out.mkdir()
    src = default_source()
    if case == "read-only-out":
        out.chmod(0o555)
    else:
        src = shared_tmp / "src"
        src.mkdir()
        for name in ("model.bin", "config.json", "tokenizer.json"):
            shutil.copy(default_source() / name, src / name)
        (src / "model.bin").chmod(0o000 if os.geteuid() else 0o600)
        out.chmod(0o777)
    result = run_export(
        "--from", str(src), "--out", str(out), "--name", "m", "--precisions", "fp32", prefix=other_user()
    )
    assert_refused(result, "ermission denied")
    assert list(out.iterdir()) == []


# -- C: an export is redone when what it read or wrote changed ------------------------------------------


def test_an_edited_source_config_is_exported_again(exported, tmp_path):
    config = json.loads((default_source() / "config.json").read_text())
    config["alignment_heads"] = [[0, 0]]
    config["suppress_ids_begin"] = [1, 2, 3]
    edited = make_source(tmp_path, config=json.dumps(config))
    target = linked_copy(exported, tmp_path / "out")
    result = run_export(
        "--from", str(edited), "--out", str(target.parent), "--name", NAME, "--precisions", "fp32"
    )
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stdout
    written = ModelConfig.load(target)
    assert written.alignment_heads == ((0, 0),) and written.suppress_ids_begin == (1, 2, 3)


@pytest.mark.parametrize(
    "missing", ["aligner.fp32.onnx", "tokenizer.json", "encoder.fp32.onnx", "decoder.fp32.onnx"]
)
def test_an_export_missing_a_file_is_stale(exported, source, tmp_path, missing):
    target = linked_copy(exported, tmp_path / "out")
    assert exporter.up_to_date(source, target, ("fp32",))
    (target / missing).unlink()
    assert not exporter.up_to_date(source, target, ("fp32",))


# -- D: only an empty directory or one of our exports is replaced ---------------------------------------


def test_a_directory_that_is_not_an_export_is_left_alone(tmp_path):
    documents = tmp_path / "home" / "Documents"
    documents.mkdir(parents=True)
    (documents / "thesis.txt").write_text("precious")
    result = run_export(
        "--from",
        str(default_source()),
        "--out",
        str(documents.parent),
        "--name",
        "Documents",
        "--precisions",
        "fp32",
    )
    assert_refused(result, str(documents))
    assert (documents / "thesis.txt").read_text() == "precious"
    assert sorted(p.name for p in documents.parent.iterdir()) == ["Documents"]


def test_the_source_directory_itself_is_not_replaced(tmp_path):
    src = make_source(tmp_path)
    result = run_export("--from", str(src), "--out", str(tmp_path), "--name", "src", "--precisions", "fp32")
    assert_refused(result, str(src))
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "model.bin", "tokenizer.json"]


# -- E: no staging directory outlives its export ----------------------------------------------------------


def test_sigterm_during_an_export_removes_its_staging_directory(tmp_path):
    out = tmp_path / "out"
    process = start_export(
        "--from", str(default_source()), "--out", str(out), "--name", "m", "--precisions", "fp32"
    )
    wait_for_staging(out, "m", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_the_staging_directory_of_a_killed_export_is_swept(exported, source):
    out = exported.parent
    process = start_export(
        "--from", str(source), "--out", str(out), "--name", NAME, "--precisions", "fp32", "--force"
    )
    wait_for_staging(out, NAME, process)
    process.kill()
    process.communicate(timeout=60)
    assert staging_dirs(out, NAME), "the killed exporter left nothing to sweep"
    result = run_export("--from", str(source), "--out", str(out), "--name", NAME, "--precisions", "fp32")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert staging_dirs(out, NAME) == []


def test_a_running_exports_staging_directory_is_kept(exported, source):
    out = exported.parent
    running = out / f".{NAME}.export-abcd1234"
    trash = out / f".{NAME}.old-1-2"  # an old export a killed exporter was deleting
    unrelated = out / f".{NAME}.notes"
    for path in (running, trash, unrelated):
        path.mkdir()
        (path / "file").write_text("x")
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the exporter that owns it does
        result = run_export("--from", str(source), "--out", str(out), "--name", NAME, "--precisions", "fp32")
        assert result.returncode == 0, result.stderr
        assert staging_dirs(out, NAME) == [running.name, unrelated.name]
    finally:
        os.close(fd)
        shutil.rmtree(running)
        shutil.rmtree(unrelated)
