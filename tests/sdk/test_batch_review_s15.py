"""`cliptext transcribe FILE...` over a batch with broken files mixed in, and its rerun under the same
--idempotency-key: the real API (and, for --wait, the real worker and inference server)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cliptext.cli import EXIT_API_ERROR, EXIT_OK
from cliptext.sdk import Client
from tests.sdk.conftest import AUDIO, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def org(make_org: Callable[..., Org]) -> Org:
    return make_org("enterprise")


@pytest.fixture
def batch(tmp_path: Path) -> dict[str, Path]:
    """Two good recordings and two broken ones: text named .mp3 (refused by complete), and an empty
    file (refused by the presign)."""
    folder = tmp_path / "batch"
    folder.mkdir()
    files = {
        "good1": folder / "a_jfk.mp3",
        "text": folder / "b_notes.mp3",
        "empty": folder / "c_empty.wav",
        "good2": folder / "d_hotwords.mp3",
    }
    shutil.copy(AUDIO / "jfk.mp3", files["good1"])
    files["text"].write_text("not audio\n")
    files["empty"].write_bytes(b"")
    shutil.copy(AUDIO / "hotwords.mp3", files["good2"])
    return files


def _ids(stdout: str) -> list[str]:
    """The ids of transcribe's ID<TAB>FILE lines (a bare id for one file)."""
    return [line.split("\t")[0] for line in stdout.splitlines()]


def _listed(api_server: ApiServer, org: Org) -> list[str]:
    return [t.id for t in Client(api_key=org.key, base_url=api_server.base_url).list_transcriptions()]


def test_broken_files_are_named_and_the_rest_still_queued(
    api_server: ApiServer, run_cli: Run, org: Org, batch: dict[str, Path]
) -> None:
    """Before, the first broken file ended the batch (the files after it never sent) with an error that
    did not say which file it was; and a batch whose broken file did not end it exited 0."""
    done = run_cli(org.key, "transcribe", *map(str, batch.values()))
    assert done.returncode == EXIT_API_ERROR, done.stderr
    ids = _ids(done.stdout)
    assert len(ids) == 2 and sorted(ids) == sorted(_listed(api_server, org)), done
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {batch['text']}: UNSUPPORTED_MEDIA: The uploaded file is not a readable audio or video file",
        f"error: {batch['empty']}: VALIDATION_ERROR: The request is invalid; see details.fields",
    ], done.stderr


def test_rerun_without_the_broken_files_under_the_same_key_queues_nothing_twice(
    api_server: ApiServer, run_cli: Run, org: Org, batch: dict[str, Path]
) -> None:
    """The user removes the files named as broken and runs the batch again with the same key: each
    good file's transcription is answered again. Before, the keys went by position, so the second
    good file took the broken one's key and the API refused it as reused (CONFLICT)."""
    key = "batch-review-s15"
    first = run_cli(org.key, "transcribe", *map(str, batch.values()), "--idempotency-key", key)
    assert first.returncode == EXIT_API_ERROR, first.stderr
    good = [str(batch["good1"]), str(batch["good2"])]
    again = run_cli(org.key, "transcribe", *good, "--idempotency-key", key)
    assert again.returncode == EXIT_OK, again.stderr
    assert _ids(again.stdout) == _ids(first.stdout) and len(set(_ids(again.stdout))) == 2
    assert sorted(_listed(api_server, org)) == sorted(_ids(first.stdout))


def test_wait_writes_every_good_transcript_and_names_the_broken(
    pipeline: ApiServer, run_cli: Run, org: Org, batch: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli(org.key, "transcribe", *map(str, batch.values()), "--wait", "-o", str(out), timeout=300)
    assert done.returncode == EXIT_API_ERROR, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["a_jfk.txt", "d_hotwords.txt"]
    assert "ask not what your country" in (out / "a_jfk.txt").read_text().lower()
    assert str(batch["text"]) in done.stderr and str(batch["empty"]) in done.stderr
    assert done.stdout == ""
