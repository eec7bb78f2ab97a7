"""`cliptext transcribe` over a folder of recordings, as a batch user runs it: which id is which file,
JSON Lines for jq, Ctrl-C while rate limited, a file given twice, and an error that stops the batch.
The real API (and, for --wait, the real worker and inference server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cliptext.cli import EXIT_API_ERROR, EXIT_INTERRUPTED, EXIT_OK
from cliptext.sdk import Client
from tests.sdk.conftest import AUDIO, ROOT, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def org(make_org: Callable[..., Org]) -> Org:
    return make_org("enterprise")


@pytest.fixture
def folder(tmp_path: Path) -> list[Path]:
    """Two recordings in a folder, as a glob gives them."""
    files = [tmp_path / "a_jfk.mp3", tmp_path / "b_hotwords.mp3"]
    shutil.copy(AUDIO / "jfk.mp3", files[0])
    shutil.copy(AUDIO / "hotwords.mp3", files[1])
    return files


def _statuses(api_server: ApiServer, org: Org) -> dict[str, str]:
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    return {t.id: t.status for t in sdk.list_transcriptions()}


def test_without_wait_each_line_names_its_file(
    api_server: ApiServer, run_cli: Run, org: Org, folder: list[Path]
) -> None:
    """Before: one bare id per line for 30 files, nothing saying which file each was. Now ID<TAB>FILE
    (one file alone: its id, for `cliptext get $(cliptext transcribe x.mp3)`); --format json: one
    object per line with "file"."""
    done = run_cli(org.key, "transcribe", *map(str, folder))
    assert done.returncode == EXIT_OK, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[1] for row in rows] == list(map(str, folder)), done.stdout
    assert set(_statuses(api_server, org)) == {row[0] for row in rows}

    as_json = run_cli(org.key, "transcribe", *map(str, folder), "--format", "json")
    assert as_json.returncode == EXIT_OK, as_json.stderr
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(o["file"], o["status"]) for o in objects] == [(str(p), "queued") for p in folder]
    assert all(o["id"].startswith("txn_") for o in objects)

    one = run_cli(org.key, "transcribe", str(folder[0]))
    assert one.returncode == EXIT_OK and one.stdout.strip().startswith("txn_")
    assert "\t" not in one.stdout


def test_a_file_given_twice_is_sent_once(
    api_server: ApiServer, run_cli: Run, org: Org, folder: list[Path]
) -> None:
    """`*.mp3 a_jfk.mp3` (or the same file under two spellings): before, uploaded, queued and charged
    twice."""
    again = folder[0].parent / "." / folder[0].name
    done = run_cli(org.key, "transcribe", str(folder[0]), str(folder[1]), str(again))
    assert done.returncode == EXIT_OK, done.stderr
    assert len(done.stdout.splitlines()) == 2 and len(_statuses(api_server, org)) == 2
    assert f"given twice, sent once: {again}" in done.stderr


def test_an_error_that_stops_the_batch_names_the_files_not_sent(
    api_server: ApiServer, run_cli: Run, org: Org, folder: list[Path]
) -> None:
    """A webhook URL the API refuses refuses every file alike, so the batch stops at the first. Before,
    the error alone: with 30 files, which were queued and which not was left to guess."""
    done = run_cli(org.key, "transcribe", *map(str, folder), "--webhook-url", "http://127.0.0.1/hook")
    assert done.returncode == EXIT_API_ERROR, done.stderr
    assert done.stdout == "" and _statuses(api_server, org) == {}
    assert [line for line in done.stderr.splitlines() if line.startswith("not sent: ")] == [
        f"not sent: {path}" for path in folder
    ], done.stderr


def test_ctrl_c_while_an_upload_waits_out_a_429_stops_at_once(org_of_two: Org, api_server: ApiServer) -> None:
    """Two requests a minute: make_org's own and the presign; the upload's complete is answered 429
    for the rest of the minute. Ctrl-C during that wait: before, the upload's give-back (a DELETE) was
    rate limited too and slept each Retry-After again (minutes); now it exits 130 at once, one line."""
    env = dict(os.environ, CLIPTEXT_API_KEY=org_of_two.key, CLIPTEXT_BASE_URL=api_server.base_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "cliptext.cli", "transcribe", str(AUDIO / "jfk.mp3")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run in the background ignores SIGINT, and a child inherits that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    with process:
        try:
            assert process.stderr is not None
            waiting = process.stderr.readline()
            assert waiting.startswith("waiting ") and "RATE_LIMITED" in waiting, waiting
            assert float(waiting.split()[1]) > 20, "the rest of the minute"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == EXIT_INTERRUPTED, err
    # the give-back's DELETE is rate limited too: the upload that still holds a slot is named, with how
    # to free it (before, nothing said which upload held the Free plan's one slot for an hour)
    first, second = err.splitlines()
    assert first == "interrupted" and out == ""
    upload_id = second.split()[1]
    assert upload_id.startswith("upl_")
    assert second == (
        f"upload {upload_id} not given back: it holds one of the plan's concurrent uploads until its URL "
        f"expires; `cliptext delete {upload_id}` frees it"
    )


def test_delete_frees_an_upload_by_its_id(run_cli: Run, org: Org, api_server: ApiServer) -> None:
    """What the line above tells the user to run: `cliptext delete upl_…` (it took transcription ids only)."""
    client = Client(api_key=org.key, base_url=api_server.base_url)
    upload = client.presign_upload("talk.mp3", "audio/mpeg", 1000)
    done = run_cli(org.key, "delete", upload.id)
    assert done.returncode == EXIT_OK and done.stderr == f"deleted {upload.id}\n", done.stderr
    again = run_cli(org.key, "delete", upload.id)
    assert again.returncode == EXIT_API_ERROR and "NOT_FOUND" in again.stderr, again.stderr


@pytest.fixture
def org_of_two(make_org: Callable[..., Org]) -> Org:
    return make_org("enterprise", rate_limit=2)


def test_json_wait_is_one_object_per_line_naming_its_file(
    pipeline: ApiServer, run_cli: Run, org: Org, folder: list[Path], tmp_path: Path
) -> None:
    """Before: each transcript pretty-printed over many lines (not JSON Lines: `jq -c` per line and
    `while read` broke), and nothing in it said which file it was of. Text with several files: FILE<TAB>
    transcript, since a failed file is left out and the order alone no longer maps them."""
    files = [*map(str, folder)]
    done = run_cli(org.key, "transcribe", *files, "--wait", "--format", "json", timeout=300)
    assert done.returncode == EXIT_OK, done.stderr
    lines = done.stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [(o["file"], o["status"]) for o in objects] == [(f, "completed") for f in files]
    assert "ask not what your country" in objects[0]["text"].lower()

    text = run_cli(org.key, "transcribe", *files, "--wait", timeout=300)
    assert text.returncode == EXIT_OK, text.stderr
    rows = [line.split("\t", 1) for line in text.stdout.splitlines()]
    assert [row[0] for row in rows] == files and "country" in rows[0][1].lower()

    shown = run_cli(None, "transcribe", "--help")
    assert "JSON Lines" in shown.stdout
