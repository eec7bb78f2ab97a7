"""`cliptext`: the command line client of the public API, built on cliptext.sdk.

Progress bars and the wait spinner go to stderr and only when it is a terminal; stdout carries only
results (ids, transcripts, JSON), so the command pipes and scripts cleanly.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from cliptext.sdk import Client, CliptextError, Transcription, UploadInterrupted, key_problem

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_TIMEOUT = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

EPILOG = """\b
Environment:
  CLIPTEXT_API_KEY   API key (or --api-key)
  CLIPTEXT_BASE_URL  API base URL (or --base-url; default http://127.0.0.1:8000/v1)
\b
Exit codes:
  0  success
  1  the API answered with an error (the code and message are printed on stderr);
     a file it refused (not audio, empty, too large) is named and the others go on
  2  usage error (bad arguments, no API key)
  3  a transcription failed or was canceled
  4  timed out waiting for a transcription (--timeout)
  5  the API could not be reached or did not answer in time (cliptext --timeout)
  130  interrupted (Ctrl-C); transcriptions already queued go on
"""

TRANSCRIBE_EPILOG = (
    """\b
Output (stdout), a line per file, in the order given:
  without --wait   its transcription id; several files: ID<TAB>FILE
  --wait           its transcript; several files, --format text: FILE<TAB>text
                   (srt, vtt: one file; several need -o DIR, a file each)
  --format json or verbose_json, with --wait or without: JSON Lines, one
                   compact object a line, "file" the FILE it is of
A file refused (not audio, empty) is named on stderr and the rest go on; an
error that stops the batch names the files not sent ("not sent: FILE"); a file
given twice is sent once.
"""
    + EPILOG
)

FORMATS = click.Choice(["json", "verbose_json", "text", "srt", "vtt"])
EXTENSIONS = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}
SUBTITLE_FORMATS = frozenset({"srt", "vtt"})  # a document a file: several cannot share stdout
# refusals of one file (what it is), not of the request: the rest of a batch goes on without it
FILE_ERROR_CODES = frozenset(
    {
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA",
        "UPLOAD_SIZE_MISMATCH",
        "AUDIO_DECODE_ERROR",
        "NO_AUDIO_STREAM",
        "AUDIO_TOO_LONG",
    }
)
FILE_FIELDS = frozenset({"file", "filename", "content_type", "size"})  # a VALIDATION_ERROR about these


def _fail(
    error: CliptextError,
    queued: Sequence[tuple[Path, Transcription]] = (),
    unsent: Sequence[Path] = (),
) -> NoReturn:
    """Print the error envelope on stderr (and the transcriptions `queued` that the server goes on with,
    and the files of the batch it stopped before queuing) and exit with the code scripts can branch on."""
    _say_error(error)
    if error.retry_after is not None:
        click.echo(f"retry after: {error.retry_after:.0f} s", err=True)
    if error.request_id:
        click.echo(f"request id: {error.request_id}", err=True)
    _name_queued(queued)
    for path in unsent:  # a batch of 30 stopped at the 12th: which to run again, without a diff
        click.echo(f"not sent: {path}", err=True)
    if error.code == "TIMEOUT" and error.status is None:
        sys.exit(EXIT_TIMEOUT)
    # only no answer is "unreachable": an answer that is not the API's (no status of its own) is an error
    unreachable = error.status is None and error.code == "SERVICE_UNAVAILABLE"
    sys.exit(EXIT_UNREACHABLE if unreachable else EXIT_API_ERROR)


def _interrupted(
    queued: Sequence[tuple[Path, Transcription]] = (), interrupt: KeyboardInterrupt | None = None
) -> NoReturn:
    """Ctrl-C: a line instead of click's "Aborted!" (exit 1, an API error's code), naming what the server
    goes on with, and an upload the SDK could not give back in time (it held the Free plan's one
    concurrent upload for an hour, and nothing said which it was)."""
    click.echo("interrupted", err=True)
    _name_queued(queued)
    if isinstance(interrupt, UploadInterrupted):
        click.echo(
            f"upload {interrupt.upload_id} not given back: it holds one of the plan's concurrent uploads "
            f"until its URL expires; `cliptext delete {interrupt.upload_id}` frees it",
            err=True,
        )
    sys.exit(EXIT_INTERRUPTED)


def _name_queued(queued: Sequence[tuple[Path, Transcription]]) -> None:
    """The ids of transcriptions queued and not printed: the server goes on with them (and charges)."""
    for path, transcription in queued:
        click.echo(f"not waited for, goes on: {transcription.id} ({path.name})", err=True)


def _interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def _spinner(label: str) -> Iterator[Callable[[Transcription], None]]:
    """A spinner with the latest status on a terminal's stderr; yields the SDK's on_update callback."""
    state = {"text": label}
    if not _interactive():
        yield lambda _t: None
        return
    stop = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{frame} {state['text']}\033[K")
            sys.stderr.flush()
            if stop.wait(0.1):
                break
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()

    def update(transcription: Transcription) -> None:
        done = f" {transcription.progress * 100:.0f}%" if transcription.progress is not None else ""
        state["text"] = f"{label}: {transcription.status}{done}"

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield update
    finally:
        stop.set()
        thread.join()


def _upload_progress(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress bar on a terminal's stderr: (the SDK's progress callback, a closer)."""
    if not _interactive():
        return (lambda _sent, _total: None), (lambda: None)
    bar: dict[str, Any] = {}

    def update(sent: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False)
            bar["bar"].__enter__()
            bar["done"] = 0
        bar["bar"].update(sent - bar["done"])
        bar["done"] = sent

    def close() -> None:
        if "bar" in bar:
            bar["bar"].__exit__(None, None, None)

    return update, close


def _render(transcription: Transcription, fmt: str) -> str:
    if fmt in ("json", "verbose_json"):
        return json.dumps(dict(transcription.raw), indent=2, sort_keys=True)
    return str(transcription.text or "")


def _json_line(body: Any, path: Path) -> str:
    """One line of transcribe's JSON Lines: the object with "file", the FILE argument it is of (a
    verbose_json object has no id, and 30 pretty-printed objects neither piped to `jq -c` line by line
    nor said which recording each was)."""
    return json.dumps({**dict(body), "file": str(path)}, sort_keys=True, ensure_ascii=False)


def _queued_line(transcription: Transcription, path: Path, several: bool, as_json: bool) -> str:
    """transcribe's line for a file queued (no --wait): its id, with several files ID<TAB>FILE (30 bare
    ids did not say which recording each was of; ID first, as `cliptext list` prints, for `cut -f1`)."""
    if as_json:
        return _json_line(transcription.raw, path)
    return f"{transcription.id}\t{path}" if several else transcription.id


def _transcript_line(text: str, path: Path, several: bool) -> str:
    """transcribe --wait's text for a file: with several files FILE<TAB>transcript on one line (a file
    left out by an error shifted the rest, so the order alone did not say which was which)."""
    return f"{path}\t{' '.join(text.split())}" if several else text


def _fetch(client: Client, done: Transcription, fmt: str) -> str:
    """A finished transcription in `fmt`: json and text are in what wait() returned, the rest is asked for."""
    if fmt == "text":
        return (done.text or "").strip()
    if fmt in ("json", "verbose_json"):
        return _render(_fetch_object(client, done, fmt), fmt)
    return client.get_transcription(done.id, fmt)  # type: ignore[call-overload]


def _fetch_object(client: Client, done: Transcription, fmt: str) -> Transcription:
    """json is what wait() returned; verbose_json is asked for. It has words only when asked for, and
    asking for them of a transcription made without word timestamps is a 409: so they are asked for
    exactly when it was made with them."""
    if fmt == "json":
        return done
    granularities = ("segment", "word") if done.options.get("word_timestamps") else ("segment",)
    return client.get_transcription(done.id, "verbose_json", timestamp_granularities=granularities)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text.rstrip("\n"))
    else:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


def _say_retry(error: CliptextError, seconds: float) -> None:
    """One stderr line per wait the SDK makes before retrying: a batch on the Free plan's 10 requests a
    minute spends minutes in these, and said nothing while it did."""
    click.echo(f"waiting {seconds:.0f} s, then retrying: {error.code}: {error.message}", err=True)


def _client(ctx: click.Context) -> Client:
    """The SDK client of the group's options, made when a command runs (so `CMD --help` needs no key)."""
    options = ctx.find_root().params
    try:
        client = Client(
            api_key=options["api_key"],
            base_url=options["base_url"],
            timeout=options["http_timeout"],
            on_retry=_say_retry,
        )
    except ValueError as error:  # a base URL without http:// (from --base-url or $CLIPTEXT_BASE_URL)
        raise click.UsageError(str(error), ctx) from error
    if not client.api_key:
        raise click.UsageError("no API key: set CLIPTEXT_API_KEY or pass --api-key", ctx)
    problem = key_problem(client.api_key)
    if problem:
        raise click.UsageError(problem, ctx)
    return ctx.with_resource(client)


def pass_client(command: Callable[..., Any]) -> Callable[..., Any]:
    """Like click.pass_obj, with the Client as the first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return ctx.invoke(command, _client(ctx), *args, **kwargs)
        except KeyboardInterrupt as interrupt:
            _interrupted(interrupt=interrupt)

    return functools.update_wrapper(wrapper, command)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-key", metavar="KEY", help="API key (default: $CLIPTEXT_API_KEY).")
@click.option("--base-url", metavar="URL", help="API base URL (default: $CLIPTEXT_BASE_URL).")
@click.option(
    "--timeout",
    "http_timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds per HTTP request (no answer in time: exit 5, as unreachable).",
)
def cli(api_key: str | None, base_url: str | None, http_timeout: float) -> None:
    """Transcribe audio and video with a Cliptext server."""


@cli.command(epilog=TRANSCRIBE_EPILOG)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--wait/--no-wait", default=False, help="Wait for each transcript and print it.")
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="text",
    show_default=True,
    help="Of the transcripts --wait prints; json and verbose_json print JSON Lines, with --wait or "
    "not (see Output below).",
)
@click.option("--language", help="Spoken language code, e.g. en (default: detect).")
@click.option("--prompt", help="Vocabulary or spellings that prime the model.")
@click.option("--word-timestamps", is_flag=True, help="Ask for per-word timings (verbose_json).")
@click.option("--webhook-url", help="URL called when each transcription finishes.")
@click.option(
    "--timeout", "wait_timeout", type=float, help="Give up waiting after this many seconds (exit 4)."
)
@click.option(
    "--idempotency-key",
    help="Run it again with the same key after any failure: nothing is uploaded or queued twice "
    "(several files: each its own key, from KEY and the file's absolute path, so the rerun may leave "
    "files out or add some).",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --wait: write FILE's transcript to DIR/<name>.<ext> instead of stdout (needed for "
    "several files in srt or vtt).",
)
@pass_client
def transcribe(
    client: Client,
    files: tuple[Path, ...],
    wait: bool,
    fmt: str,
    language: str | None,
    prompt: str | None,
    word_timestamps: bool,
    webhook_url: str | None,
    wait_timeout: float | None,
    idempotency_key: str | None,
    output_dir: Path | None,
) -> None:
    """Upload FILE(s) and queue their transcription.

    Without --wait, prints each transcription's id as it is queued (for `cliptext get`). With --wait,
    prints each transcript in --format as it completes; exits 3 when any transcription failed."""
    exit_code = EXIT_OK
    created: list[tuple[Path, Transcription]] = []
    finished = 0  # of `created`, those waited for
    files = _once_each(files)
    several = len(files) > 1
    as_json = fmt in ("json", "verbose_json")
    if wait and output_dir is not None:
        _refuse_same_output(files, fmt)
    if wait and output_dir is None and several and fmt in SUBTITLE_FORMATS:
        # two SRT documents one after the other are no SRT (the second numbers its cues from 1 again
        # and starts back at 00:00:00); two WebVTT ones have a WEBVTT header halfway down: refused
        # before any upload, not found out by a player after the batch was charged
        raise click.UsageError(f"several files and --format {fmt} print one invalid {fmt} file: use -o DIR")
    sending, sent = True, 0  # sent: the index of the file being sent (read when an error stops it)
    try:
        for sent, path in enumerate(files):  # noqa: B007
            progress, close = _upload_progress(f"uploading {path.name}")
            try:
                transcription = client.transcribe(
                    path,
                    wait=False,
                    progress=progress,
                    language=language,
                    prompt=prompt,
                    webhook_url=webhook_url,
                    word_timestamps=word_timestamps or None,
                    idempotency_key=_file_key(idempotency_key, path, len(files)),
                )
            except CliptextError as error:
                if not _about_the_file(error):
                    raise
                _say_error(error, about=path)
                exit_code = EXIT_API_ERROR
                continue
            finally:
                close()
            if not wait:
                click.echo(_queued_line(transcription, path, several, as_json))
            created.append((path, transcription))
        sending = False
        if not wait:
            sys.exit(exit_code)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        for finished, (path, transcription) in enumerate(created):  # noqa: B007 (read on Ctrl-C)
            with _spinner(f"{path.name} ({transcription.id})") as on_update:
                done = client.wait(transcription.id, wait_timeout, on_update=on_update)
            if done.status != "completed":
                error = done.error
                reason = f"{error.code}: {error.message}" if error else done.status
                click.echo(f"error: {path.name} ({done.id}) {done.status}: {reason}", err=True)
                exit_code = exit_code or EXIT_FAILED
                continue
            if output_dir is not None:
                _emit(_fetch(client, done, fmt), output_dir / _output_name(path, fmt))
            elif as_json:
                click.echo(_json_line(_fetch_object(client, done, fmt).raw, path))
            else:
                text = _fetch(client, done, fmt)
                _emit(_transcript_line(text, path, several and fmt == "text"), None)
    except CliptextError as error:
        # without --wait each id was printed as it was queued; with it, those not waited for are named;
        # an error while sending (the plan's limits, an option every file would be refused for) stops
        # the batch there, and the files from that one on are named
        _fail(error, created[finished:] if wait else (), files[sent:] if sending else ())
    except KeyboardInterrupt as interrupt:
        _interrupted(created[finished:], interrupt)
    sys.exit(exit_code)


def _about_the_file(error: CliptextError) -> bool:
    """A refusal of this file alone (not audio, empty, too large or too long): the other files of the
    batch go on. Anything else (the key, the plan's limits, an option, the API down) would refuse every
    file alike, so the batch stops there."""
    if error.code in FILE_ERROR_CODES:
        return True
    if error.code != "VALIDATION_ERROR":
        return False
    details = error.details or {}
    fields = set(details.get("fields") or ()) | ({details["field"]} if details.get("field") else set())
    return bool(fields) and fields <= FILE_FIELDS


def _say_error(error: CliptextError, about: Path | None = None) -> None:
    """The error's code, message and details on stderr; `about`: the file of a batch it refused (the
    error alone did not say which of hundreds it was)."""
    subject = f"{about}: " if about is not None else ""
    click.echo(f"error: {subject}{error.code}: {error.message}", err=True)
    if error.details:
        click.echo(f"details: {json.dumps(error.details, sort_keys=True)}", err=True)


def _file_key(key: str | None, path: Path, count: int) -> str | None:
    """The Idempotency-Key of `path`, one of `count` files: the key itself for one file, else the key
    and a digest of the file's absolute path. Not its position: a rerun without the broken files (or
    with files added) gave each file the key of another, and the API refused it as reused."""
    if key is None or count == 1:
        return key
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return f"{key}:{digest}"


def _once_each(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """FILE(s) without repeats (`*.mp3 talk.mp3`, or `talk.mp3 ./talk.mp3`): each was uploaded, queued
    and charged once more. A repeat is named on stderr; the first place it was given is kept."""
    seen: set[Path] = set()
    kept: list[Path] = []
    for path in files:
        same = path.resolve()
        if same in seen:
            click.echo(f"given twice, sent once: {path}", err=True)
            continue
        seen.add(same)
        kept.append(path)
    return tuple(kept)


def _output_name(path: Path, fmt: str) -> str:
    return f"{path.stem}.{EXTENSIONS[fmt]}"


def _refuse_same_output(files: tuple[Path, ...], fmt: str) -> None:
    """-o DIR names each output after its input's stem: two inputs of one stem (talk.mp3, talk.wav; a
    file given twice) would write one file, the last transcript over the first. Refused before any
    upload."""
    seen: dict[str, Path] = {}
    for path in files:
        name = _output_name(path, fmt)
        if name in seen:
            raise click.UsageError(f"{seen[name]} and {path} would both be written to {name} (-o)")
        seen[name] = path


@cli.command("list", epilog=EPILOG)
@click.option(
    "--status",
    type=click.Choice(["queued", "processing", "completed", "failed", "canceled"]),
    help="Only these.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Print at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_client
def list_(client: Client, status: str | None, limit: int | None, as_json: bool) -> None:
    """List transcriptions, newest first: id, status, created, duration, text (tab-separated)."""
    try:
        items = client.list_transcriptions(status=status, limit=min(limit or 100, 100))
        for transcription in itertools.islice(items, limit):
            if as_json:
                click.echo(json.dumps(dict(transcription.raw), sort_keys=True))
                continue
            created = (
                transcription.created_at.isoformat(timespec="seconds") if transcription.created_at else ""
            )
            duration = f"{transcription.duration:.1f}" if transcription.duration is not None else ""
            text = (transcription.text or "").strip().replace("\t", " ").replace("\n", " ")
            click.echo("\t".join([transcription.id, transcription.status, created, duration, text[:60]]))
    except CliptextError as error:
        _fail(error)


@cli.command(epilog=EPILOG)
@click.argument("transcription_id", metavar="ID")
@click.option("--format", "fmt", type=FORMATS, default="json", show_default=True)
@click.option("--words", is_flag=True, help="verbose_json: add per-word timings (needs --word-timestamps).")
@pass_client
def get(client: Client, transcription_id: str, fmt: str, words: bool) -> None:
    """Print transcription ID in --format (json shows its status; text/srt/vtt the transcript)."""
    if words and fmt != "verbose_json":
        raise click.UsageError("--words goes with --format verbose_json")
    try:
        if fmt == "verbose_json":
            granularities = ("segment", "word") if words else ("segment",)
            result = client.get_transcription(transcription_id, fmt, timestamp_granularities=granularities)
        else:
            result = client.get_transcription(transcription_id, fmt)  # type: ignore[call-overload]
    except CliptextError as error:
        _fail(error)
    click.echo(result.rstrip("\n") if isinstance(result, str) else _render(result, fmt))


@cli.command(epilog=EPILOG)
@click.argument("transcription_id", metavar="ID")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--timeout", "wait_timeout", type=float, help="Give up after this many seconds (exit 4).")
@pass_client
def wait(client: Client, transcription_id: str, fmt: str, wait_timeout: float | None) -> None:
    """Wait for transcription ID to finish and print it; exits 3 when it failed."""
    try:
        with _spinner(transcription_id) as on_update:
            done = client.wait(transcription_id, wait_timeout, on_update=on_update)
        if done.status != "completed":
            reason = f"{done.error.code}: {done.error.message}" if done.error else done.status
            click.echo(f"error: {done.id} {done.status}: {reason}", err=True)
            sys.exit(EXIT_FAILED)
        text = _fetch(client, done, fmt)
    except CliptextError as error:
        _fail(error)
    click.echo(text.rstrip("\n"))


@cli.command(epilog=EPILOG)
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@pass_client
def delete(client: Client, ids: tuple[str, ...]) -> None:
    """Delete transcription(s) ID (canceling them when still queued or running), or upload(s) upl_… that
    no transcription uses (freeing their concurrent-upload slots)."""
    try:
        for an_id in ids:
            if an_id.startswith("upl_"):
                client.delete_upload(an_id)
            else:
                client.delete_transcription(an_id)
            click.echo(f"deleted {an_id}", err=True)
    except CliptextError as error:
        _fail(error)


def _tolerate_unencodable_output() -> None:
    """A transcript with characters the terminal's encoding lacks (Japanese on a Latin-1 terminal) is
    printed with '?' for them, not a UnicodeEncodeError traceback; UTF-8 output is unchanged."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`cliptext = "cliptext.cli:main"`); returns the exit code."""
    _tolerate_unencodable_output()
    try:
        cli.main(args=argv, prog_name="cliptext", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_API_ERROR)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
