"""The `cliptext` command (`python -m cliptext.cli`) against the real API: output, exit codes, terminals."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable

import pytest

from cliptext.cli import EXIT_API_ERROR, EXIT_OK, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_USAGE
from tests.sdk.conftest import AUDIO, ROOT, ApiServer, Org

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def org(make_org: Callable[..., Org]) -> Org:
    return make_org("enterprise")


def test_transcribe_list_get_delete_piped(run_cli: Run, org: Org) -> None:
    done = run_cli(
        org.key, "transcribe", str(AUDIO / "jfk.mp3"), str(AUDIO / "hotwords.mp3"), "--language", "en"
    )
    assert done.returncode == EXIT_OK, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]  # ID<TAB>FILE, in the order given
    ids = [row[0] for row in rows]
    assert [row[1] for row in rows] == [str(AUDIO / "jfk.mp3"), str(AUDIO / "hotwords.mp3")]
    assert len(ids) == 2 and all(i.startswith("txn_") for i in ids)
    assert "\r" not in done.stderr and "uploading" not in done.stderr, "no progress bar when not a terminal"

    listed = run_cli(org.key, "list")
    assert listed.returncode == EXIT_OK, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == ids[::-1] and {row[1] for row in rows} == {"queued"}
    assert run_cli(org.key, "list", "--status", "completed").stdout == ""
    as_json = run_cli(org.key, "list", "--json", "--limit", "1")
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [ids[1]]

    got = run_cli(org.key, "get", ids[0])
    assert got.returncode == EXIT_OK
    body = json.loads(got.stdout)
    assert (body["id"], body["status"], body["options"]["language"]) == (ids[0], "queued", "en")

    deleted = run_cli(org.key, "delete", ids[0])
    assert deleted.returncode == EXIT_OK and deleted.stdout == ""
    gone = run_cli(org.key, "get", ids[0])
    assert gone.returncode == EXIT_API_ERROR and gone.stdout == ""
    assert "NOT_FOUND" in gone.stderr


def test_usage_errors_exit_2(run_cli: Run, org: Org) -> None:
    no_key = run_cli(None, "list")
    assert no_key.returncode == EXIT_USAGE and "CLIPTEXT_API_KEY" in no_key.stderr
    assert run_cli(org.key, "transcribe", "/no/such/file.mp3").returncode == EXIT_USAGE
    assert run_cli(org.key, "get", "txn_x", "--format", "docx").returncode == EXIT_USAGE
    assert run_cli(None, "transcribe", "--help").returncode == EXIT_OK, "help needs no key"


def test_help_documents_exit_codes(run_cli: Run) -> None:
    shown = run_cli(None, "--help")
    assert shown.returncode == EXIT_OK
    for line in ("0  success", "1  the API answered", "3  a transcription failed", "4  timed out"):
        assert line in shown.stdout


def test_api_error_and_unreachable(run_cli: Run) -> None:
    bad_key = run_cli("ck_wrong", "list")
    assert bad_key.returncode == EXIT_API_ERROR and "UNAUTHORIZED" in bad_key.stderr
    down = run_cli("ck_wrong", "list", base_url="http://127.0.0.1:9/v1")
    assert down.returncode == EXIT_UNREACHABLE and "SERVICE_UNAVAILABLE" in down.stderr


def test_wait_timeout_exits_4(run_cli: Run, org: Org) -> None:
    """No worker runs in these tests, so the transcription stays queued past --timeout."""
    done = run_cli(org.key, "transcribe", str(AUDIO / "jfk.mp3"), "--wait", "--timeout", "1")
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "TIMEOUT" in done.stderr and done.stdout == ""


def test_progress_bar_on_a_terminal(api_server: ApiServer, org: Org) -> None:
    """With stderr on a (pseudo) terminal the upload shows a progress bar there; stdout stays the id."""
    leader, follower = pty.openpty()
    env = dict(os.environ, CLIPTEXT_API_KEY=org.key, CLIPTEXT_BASE_URL=api_server.base_url)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cliptext.cli", "transcribe", str(AUDIO / "jfk.flac")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=120,
        )
        os.close(follower)
        follower = -1
        terminal = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == EXIT_OK
    assert done.stdout.strip().startswith("txn_")
    assert b"uploading jfk.flac" in terminal and b"100%" in terminal


def test_transcribe_again_with_the_same_idempotency_key_queues_nothing_twice(run_cli: Run, org: Org) -> None:
    """A script rerun after a failure (a dropped connection, Ctrl-C) with the same --idempotency-key
    answers the transcriptions the first run queued, one per file, instead of queuing (and billing)
    each file again."""
    files = [str(AUDIO / "jfk.mp3"), str(AUDIO / "hotwords.mp3")]
    first = run_cli(org.key, "transcribe", *files, "--idempotency-key", "nightly-batch-7")
    assert first.returncode == EXIT_OK, first.stderr
    again = run_cli(org.key, "transcribe", *files, "--idempotency-key", "nightly-batch-7")
    assert again.returncode == EXIT_OK, again.stderr
    ids = [line.split("\t")[0] for line in first.stdout.splitlines()]
    assert len(set(ids)) == 2 and again.stdout == first.stdout
    listed = run_cli(org.key, "list")
    assert sorted(line.split("\t")[0] for line in listed.stdout.splitlines()) == sorted(ids)
