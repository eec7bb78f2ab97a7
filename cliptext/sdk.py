"""Typed Python client for the public Cliptext REST API (/v1), on `requests`.

    from cliptext.sdk import Client
    client = Client()                      # CLIPTEXT_API_KEY, CLIPTEXT_BASE_URL from the environment
    txn = client.transcribe("talk.mp3")    # upload, create, wait
    print(txn.text)

Every failure is one exception type, `CliptextError(code, message, details, status)`: the API's error
envelope, or a local condition with a code of the same list (`SERVICE_UNAVAILABLE` when the API
cannot be reached or does not answer in time, `TIMEOUT` only when wait() gives up); `.request_id` is
the X-Request-Id the API logged the request under. Answers 429 (and 503 with Retry-After) are retried
a bounded number of times after sleeping what Retry-After says; a 502, 503 or 504 (a load balancer
between deploys) too when the request is safe to repeat.

The key and base URL are client-side settings, so the client reads them itself (not cliptext.settings,
which configures the server): `CLIPTEXT_API_KEY` and `CLIPTEXT_BASE_URL` (default
http://127.0.0.1:8000/v1, what `make run` serves).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import hashlib
import html
import mimetypes
import os
import random
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, overload

import requests
import urllib3.exceptions

from cliptext.errors import CODE_FOR_HTTP, ErrorCode
from cliptext.sdk_types import (
    FINAL_STATUSES,
    ApiKey,
    CliptextError,
    Limits,
    Member,
    Organization,
    PresignedUpload,
    Segment,
    Transcription,
    TranscriptionError,
    Upload,
    UploadInterrupted,
    WebhookSecret,
    Word,
)

__all__ = [
    "FINAL_STATUSES",
    "ApiKey",
    "Client",
    "CliptextError",
    "Limits",
    "Member",
    "Organization",
    "PresignedUpload",
    "Segment",
    "Transcription",
    "TranscriptionError",
    "Upload",
    "UploadInterrupted",
    "WebhookSecret",
    "Word",
    "key_problem",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
TEXT_FORMATS = frozenset({"text", "srt", "vtt"})
Format = Literal["json", "verbose_json", "text", "srt", "vtt"]
ProgressCallback = Callable[[int, int], None]  # (bytes sent, total bytes)
UPLOAD_CHUNK = 1024 * 1024
ANSWER_READ = 64 * 1024  # at most this much of an answer per read while a deadline is watched
# the code of an error answer that is not the API's envelope (a proxy's page), by HTTP status: as the API
# itself would have answered it, and a gateway's 502/504 as its 503
CODE_FOR_STATUS = {
    **{status: str(code) for status, code in CODE_FOR_HTTP.items()},
    502: str(ErrorCode.SERVICE_UNAVAILABLE),
    504: str(ErrorCode.SERVICE_UNAVAILABLE),
}
GATEWAY_STATUSES = frozenset({502, 503, 504})
# what an HTTP header can carry of a key: printable ASCII, no spaces (a key copied with a line break)
KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")
HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
HTML_TAG = re.compile(r"<[^>]+>")


# ---------------------------------------------------------------------------------------------------
# upload body


class _ProgressBody:
    """A file streamed in chunks with a known length (so requests sends Content-Length, as S3 needs),
    reporting (sent, total) after each chunk."""

    def __init__(self, handle: IO[bytes], total: int, progress: ProgressCallback | None) -> None:
        self._handle = handle
        self._start = handle.tell() if handle.seekable() else 0
        self._total = total
        self._progress = progress

    def __len__(self) -> int:
        return self._total

    def __iter__(self) -> Iterator[bytes]:
        if self._handle.seekable():
            self._handle.seek(self._start)
        sent = 0
        if self._progress:
            self._progress(0, self._total)
        while sent < self._total:
            chunk = self._handle.read(min(UPLOAD_CHUNK, self._total - sent))
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
            if self._progress:
                self._progress(sent, self._total)


GIVE_BACK_TRIES = 6  # 2.5 s of waits for the server to let go of a dropped PUT
INTERRUPTED_GIVE_BACK = 3.0  # seconds the give-back of an upload stopped by Ctrl-C may take in all
# transcribe(idempotency_key=K) presigns under K + ":upload"; when that upload is gone (a failed attempt
# gave it back, or it expired), under K + ":upload:2", ":upload:3"... each retry walks the same chain
UPLOAD_KEY_SUFFIX = ":upload"
MAX_UPLOAD_GENERATIONS = 20
MAX_KEY_BASE = 200  # room for the suffix within the API's 255 characters
# complete's answers for an upload an earlier attempt reserved that will never be usable: deleted (by a
# failed attempt's give-back), expired, or refused and deleted by that very complete
GONE_UPLOAD_CODES = frozenset({"NOT_FOUND", "UPLOAD_SIZE_MISMATCH"})


def _remaining_size(handle: IO[bytes]) -> int:
    try:
        return os.fstat(handle.fileno()).st_size - handle.tell()
    except (OSError, AttributeError, ValueError):
        position = handle.tell()
        end = handle.seek(0, os.SEEK_END)
        handle.seek(position)
        return end - position


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds from now: RFC 9110 allows a number of seconds or an HTTP-date."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC without a named zone
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - _server_now(response)).total_seconds())


def _server_now(response: requests.Response) -> dt.datetime:
    """The answer's own Date, which a Retry-After date is counted from: a phone whose clock is hours off
    the server's read "in 1 s" as hours (over max_retry_wait: raised, not retried) or as already past
    (retried at once, again and again). Our clock only when the answer has no usable Date."""
    try:
        now = email.utils.parsedate_to_datetime(response.headers.get("Date") or "")
    except (TypeError, ValueError):
        return dt.datetime.now(dt.UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


def _backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, ...) when the server named no time: exponential,
    jittered to between half and all of it, so that clients that failed together (an API restart, a
    load balancer's 502s) do not all come back at the same instant."""
    return min(2.0**attempt * 0.25, 5.0) * random.uniform(0.5, 1.0)


def _short(key: str) -> str:
    """The key, or its SHA-256 when a suffix would take it past the API's 255 characters."""
    return key if len(key) <= MAX_KEY_BASE else hashlib.sha256(key.encode()).hexdigest()


def _upload_key(key: str) -> str:
    """The presign's Idempotency-Key of transcribe(idempotency_key=key)."""
    return _short(key) + UPLOAD_KEY_SUFFIX


def _generation_key(key: str, generation: int) -> str:
    """A keyed upload's presign key: the key itself first, then key:2, key:3... (its earlier uploads gone)."""
    return key if generation == 1 else f"{_short(key)}:{generation}"


def _unreachable(error: CliptextError) -> bool:
    """The API could not be reached or asked for time (no connection, no answer, a gateway's or its own
    502/503/504): what an API restart looks like, worth polling through, unlike a 4xx."""
    if error.status is None:
        return error.code == "SERVICE_UNAVAILABLE"
    return error.status in GATEWAY_STATUSES


def _busy(error: CliptextError) -> bool:
    """The 409 of local storage while another PUT or complete of the same upload runs (Retry-After)."""
    return error.status == 409 and error.retry_after is not None and error.retry_after <= 60


def _deleted_under_key(error: CliptextError) -> bool:
    """The 409 the API answers a key whose upload (or transcription) was deleted since: final for it."""
    return error.code == "CONFLICT" and (error.details or {}).get("reason") == "deleted"


def _in_progress(error: CliptextError) -> bool:
    """The 409 the API answers while the first request under the same Idempotency-Key still runs
    (details.reason "in_progress"), not "used with a different request" ("key_reused": never worth
    retrying)."""
    return error.status == 409 and error.code == "CONFLICT" and error.details.get("reason") == "in_progress"


def _part_name(handle: IO[bytes], filename: str | None) -> str:
    """The multipart file name: the API tells the format by it, so a nameless file object needs one."""
    if filename:
        return filename
    name = getattr(handle, "name", None)
    if isinstance(name, str) and Path(name).name:
        return Path(name).name
    raise ValueError(
        "This file object has no file name (the API tells the format by it): pass filename=, "
        "e.g. filename='talk.mp3'"
    )


def _page_summary(response: requests.Response) -> str:
    """One line saying what a page that is not the API's envelope says (a proxy's 502 page): its
    <title>, else its text without tags; the raw page printed every line of its HTML after "error:"."""
    text = response.text or ""
    title = HTML_TITLE.search(text)
    if title:
        text = title.group(1)
    elif HTML_TAG.search(text):
        text = HTML_TAG.sub(" ", text)
    text = html.unescape(" ".join(text.split()))
    return (text or response.reason or "no message")[:300]


def _error_from_response(response: requests.Response) -> CliptextError:
    """The envelope as a CliptextError; a non-envelope answer (a proxy's 502 page) gets a code by status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    request_id = response.headers.get("X-Request-Id")
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        details = error.get("details") if isinstance(error.get("details"), Mapping) else None
        return CliptextError(
            str(error.get("code") or "INTERNAL"),
            str(error.get("message") or response.reason or ""),
            details,
            response.status_code,
            retry_after=_retry_after(response),
            request_id=request_id or (details or {}).get("request_id"),
        )
    code = CODE_FOR_STATUS.get(response.status_code, "INTERNAL")
    return CliptextError(
        code,
        f"HTTP {response.status_code}: {_page_summary(response)}",
        None,
        response.status_code,
        retry_after=_retry_after(response),
        request_id=request_id,
    )


def _decoded(response: requests.Response, what: str) -> Mapping[str, Any]:
    """The JSON object of a successful answer; a page instead (a proxy's, or a base URL that is not the
    API's), or JSON that is not an object (another service's), is an error, not a JSONDecodeError or an
    AttributeError."""
    try:
        body = response.json()
    except ValueError as exc:
        raise _not_the_api(response, f"The API answered {what} with non-JSON") from exc
    if not isinstance(body, Mapping):
        raise _not_the_api(response, f"The API answered {what} with JSON that is not an object")
    return body


def _not_the_api(response: requests.Response, what: str) -> CliptextError:
    return CliptextError(
        "INTERNAL",
        f"{what} (is the base URL the API's /v1?)",
        None,
        response.status_code,
        request_id=response.headers.get("X-Request-Id"),
    )


def _page(body: Mapping[str, Any], what: str) -> tuple[list[Mapping[str, Any]], bool]:
    """(items, has_more) of a list answer; another shape is INTERNAL, not a TypeError mid-iteration."""
    items = body.get("data") or []
    if not isinstance(items, list) or not all(isinstance(item, Mapping) and "id" in item for item in items):
        raise CliptextError("INTERNAL", f"The API answered {what} with no list of objects under 'data'")
    return items, bool(body.get("has_more"))


def key_problem(api_key: str) -> str | None:
    """Why this key cannot be sent, or None. A key is never quoted: requests' own error for a header
    with a line break would print the whole header, key included (and a non-Latin-1 one crashes)."""
    if not api_key:
        return "No API key: pass api_key= or set CLIPTEXT_API_KEY"
    if not KEY_CHARACTERS.fullmatch(api_key):
        return "The API key has characters no key has (spaces, line breaks, non-ASCII): check its copy"
    return None


def _read_by(response: requests.Response, deadline: float) -> None:
    """Read a streamed answer's body into it, a read at a time, until `deadline`: the client's timeout
    bounds each read, not the answer, so one arriving a byte at a time (a congested radio link) held
    wait(timeout=2) for minutes. Raises what requests would (ReadTimeout once the deadline passes)."""
    chunks: list[bytes] = []
    try:
        while chunk := response.raw.read1(ANSWER_READ, decode_content=True):
            chunks.append(chunk)
            if time.monotonic() >= deadline and not response.raw.closed:
                raise requests.ReadTimeout("the answer was still arriving at the deadline")
    except urllib3.exceptions.ReadTimeoutError as exc:  # a read stalled for the client's timeout
        raise requests.ReadTimeout(exc, response=response) from exc
    except urllib3.exceptions.HTTPError as exc:  # requests' own reading wraps these the same way
        raise requests.ConnectionError(exc, response=response) from exc
    finally:
        response.close()  # read whole (the connection goes back to the pool) or given up on
    response._content = b"".join(chunks)
    response._content_consumed = True


def _sleep(seconds: float, deadline: float | None, why: str) -> None:
    """time.sleep, except that a sleep ending past `deadline` raises TIMEOUT at once instead."""
    if deadline is not None and time.monotonic() + seconds > deadline:
        raise CliptextError("TIMEOUT", f"Gave up {why}: waiting {seconds:g} s would pass the deadline")
    time.sleep(seconds)


# ---------------------------------------------------------------------------------------------------
# client


def _api_root(url: str) -> str:
    """The API's root from a base URL: a deployment's address alone ("http://host:8000") means its /v1,
    where every call was a 404 "Not found" that named no cause; a path given (a proxy's prefix) is kept."""
    url = url.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # "localhost:8000" was sent as is: each call retried, then SERVICE_UNAVAILABLE "No connection
        # adapters were found", as if the API were down
        raise ValueError(f"The base URL must start with http:// or https://, e.g. http://{url}/v1")
    if not parts.path:
        url += "/v1"
    return url


class Client:
    """One API key against one Cliptext deployment. It keeps a requests.Session (connection reuse),
    which is not meant to be shared between threads: give each thread its own Client."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 120.0,
        session: requests.Session | None = None,
        on_retry: Callable[[CliptextError, float], None] | None = None,
    ) -> None:
        """`max_retries` bounds the retries of a 429/503 answer; a Retry-After above `max_retry_wait`
        seconds is not waited for (the error is raised). `timeout`: seconds to connect, and seconds
        of silence while sending or awaiting the answer (a slow upload that keeps going is not cut).
        `on_retry(error, seconds)` is called before each wait to retry an error answer (a 429's
        Retry-After: a batch on a small plan otherwise looks hung for minutes).
        ValueError for a base URL without http:// or https:// (e.g. "localhost:8000")."""
        if timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        key = api_key if api_key is not None else os.environ.get("CLIPTEXT_API_KEY", "")
        self.api_key = key.strip()  # a key read from a file comes with its line break
        given = base_url or os.environ.get("CLIPTEXT_BASE_URL", "").strip()
        self.base_url = _api_root(given or DEFAULT_BASE_URL)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = "cliptext-python"
        self._on_retry = on_retry

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, IO[bytes], str]] | None = None,
        data: Mapping[str, Any] | None = None,
        retry_network: bool | None = None,
        deadline: float | None = None,
        gone_ok: bool = False,
    ) -> requests.Response:
        """Send one API request, retrying what is safe to retry; turn any failure into CliptextError.

        Retried, at most `max_retries` times in all: 429 / 503 after Retry-After; with an
        Idempotency-Key, the 409 saying the key's first request is still running (that attempt outlived
        our timeout); network errors and a gateway's 502 / 503 / 504, for requests safe to repeat (GET,
        DELETE, or a POST carrying an Idempotency-Key). Every attempt carries one X-Request-Id, which
        any error raised carries as `request_id`. No answer in time is SERVICE_UNAVAILABLE, like no
        connection: TIMEOUT is wait()'s. `deadline` (time.monotonic()) bounds the whole call: a request
        still unanswered (or its answer's body still arriving) or a Retry-After sleep ending past it
        raises TIMEOUT (a network error or a gateway's 502/503/504 is not retried past it, but raised).
        `gone_ok`: a 404 after an attempt whose answer was lost is success (a DELETE that the lost
        attempt carried out)."""
        problem = key_problem(self.api_key)
        if problem:
            raise CliptextError("UNAUTHORIZED", problem)
        url = self.base_url + path
        request_id = uuid.uuid4().hex
        all_headers = {
            "Authorization": f"Bearer {self.api_key}",
            "X-Request-Id": request_id,
            **(headers or {}),
        }
        keyed = "Idempotency-Key" in all_headers
        if retry_network is None:
            retry_network = method in ("GET", "DELETE", "HEAD") or keyed
        positions = {name: part[1].tell() for name, part in (files or {}).items()}
        attempt = 0
        unanswered = False  # an earlier attempt got no answer: the server may have carried it out
        while True:
            for name, position in positions.items():
                files[name][1].seek(position)  # type: ignore[index]
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, max(deadline - time.monotonic(), 0.1))
            try:
                response = self._session.request(
                    method,
                    url,
                    json=json,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers=all_headers,
                    files=files,
                    data=data,
                    timeout=timeout,
                    stream=deadline is not None,
                )
                if deadline is not None:
                    _read_by(response, deadline)
            except requests.RequestException as exc:
                if (
                    isinstance(exc, requests.Timeout)
                    and deadline is not None
                    and time.monotonic() >= deadline
                ):
                    raise CliptextError(
                        "TIMEOUT",
                        f"No answer from the API before the deadline: {exc}",
                        request_id=request_id,
                    ) from exc
                pause = _backoff(attempt + 1)
                in_time = deadline is None or time.monotonic() + pause <= deadline
                if retry_network and attempt < self.max_retries and in_time:
                    attempt += 1
                    unanswered = True
                    time.sleep(pause)
                    continue
                raise CliptextError(
                    "SERVICE_UNAVAILABLE",
                    f"Cannot reach the Cliptext API at {self.base_url}: {exc}",
                    request_id=request_id,
                ) from exc
            if response.status_code < 400 or (response.status_code == 404 and gone_ok and unanswered):
                return response
            error = _error_from_response(response)
            error.request_id = error.request_id or request_id
            wait = self._retry_wait(error, attempt, keyed, retry_network)
            if wait is None:
                raise error
            past_deadline = deadline is not None and time.monotonic() + wait > deadline
            if past_deadline and error.status in GATEWAY_STATUSES:
                raise error  # as a network error is: not retried past the deadline, and no TIMEOUT
            attempt += 1
            # a gateway's 502/504 may come after the API carried the request out
            unanswered = unanswered or error.status in GATEWAY_STATUSES
            if self._on_retry is not None and not past_deadline:  # no "waiting 58 s" before TIMEOUT
                self._on_retry(error, wait)
            _sleep(wait, deadline, f"retrying {error.code}")

    def _retry_wait(
        self, error: CliptextError, attempt: int, keyed: bool, safe: bool = False
    ) -> float | None:
        """Seconds to sleep before retrying this error answer; None when it is raised instead.

        `safe`: the request may be repeated (GET, DELETE, a keyed POST), so a gateway's 502/503/504
        without Retry-After (the API restarting behind a load balancer) is retried after a back-off."""
        if attempt >= self.max_retries:
            return None
        if error.status == 429 or (error.status == 503 and error.retry_after is not None):
            wait = 1.0 if error.retry_after is None else error.retry_after
            return wait if wait <= self.max_retry_wait else None
        if safe and error.status in GATEWAY_STATUSES:
            wait = _backoff(attempt + 1) if error.retry_after is None else error.retry_after
            return wait if wait <= self.max_retry_wait else None
        if keyed and _in_progress(error):
            return _backoff(attempt + 1)
        return None

    def _json(self, method: str, path: str, **kwargs: Any) -> Mapping[str, Any]:
        return _decoded(self._request(method, path, **kwargs), f"{method} {path}")

    # -- uploads ------------------------------------------------------------------------------------

    def presign_upload(
        self, filename: str, content_type: str, size: int, *, idempotency_key: str | None = None
    ) -> PresignedUpload:
        """Ask where to PUT `size` bytes (the first step of upload()). With `idempotency_key`, the same
        request again answers the same upload (and is retried after a network error)."""
        return self._presign(filename, content_type, size, idempotency_key)[0]

    def _presign(
        self, filename: str, content_type: str, size: int, idempotency_key: str | None
    ) -> tuple[PresignedUpload, bool]:
        """(the presigned upload, whether the API replayed it: an earlier attempt reserved it)."""
        body = {"filename": filename, "content_type": content_type, "size": size}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._request("POST", "/uploads/presigned", json=body, headers=headers)
        presigned = PresignedUpload.from_json(_decoded(response, "POST /uploads/presigned"))
        return presigned, response.headers.get("Idempotent-Replayed") == "true"

    def complete_upload(self, upload_id: str) -> Upload:
        """Tell the API the bytes are in place; it checks them and returns the upload.

        Safe to repeat (a completed upload is answered as it is), so retried after a network error."""
        return Upload.from_json(
            self._json("POST", "/uploads/complete", json={"upload_id": upload_id}, retry_network=True)
        )

    def upload(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        filename: str | None = None,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
        idempotency_key: str | None = None,
    ) -> Upload:
        """Upload a file (path or binary file object): presign, PUT the bytes streamed, complete.

        `progress(sent, total)` is called as the bytes go out. An upload that fails for good (its PUT
        refused or unanswered, the file unreadable midway, Ctrl-C) is deleted before the error is raised:
        it held one of the plan's concurrent uploads for an hour (the Free plan's only one).

        With `idempotency_key`, calling again with the same key and file resumes the upload the first
        call reserved: bytes already in place are not sent again, and a completed upload is returned as
        it is (one deleted or expired meanwhile is replaced by a new one, under a key derived from it)."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                return self.upload(
                    handle,
                    filename=filename,
                    content_type=content_type,
                    progress=progress,
                    idempotency_key=idempotency_key,
                )
        name = filename or Path(str(getattr(source, "name", "") or "audio")).name
        kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        size = _remaining_size(source)
        # without a key of the caller's, one of our own: a presign whose answer was lost is then retried
        # and answered the same upload, where it raised and the upload the API had reserved held one of
        # the plan's concurrent uploads for an hour (the Free plan's only one) with no one to free it
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        return self._keyed_upload(source, name, size, kind, progress, key)

    def _keyed_upload(
        self, source: IO[bytes], name: str, size: int, kind: str, progress: ProgressCallback | None, key: str
    ) -> Upload:
        """upload() under an Idempotency-Key: presign under the key (generation 1, 2, ...); an upload the
        API replays is completed first (its bytes may be in place already), its bytes sent only when
        none are, and the next generation taken when it is gone."""
        for generation in range(1, MAX_UPLOAD_GENERATIONS + 1):
            try:
                presigned, replayed = self._presign(name, kind, size, _generation_key(key, generation))
            except CliptextError as error:
                if _deleted_under_key(error):  # given back by a failed attempt, or purged: the next one
                    continue
                raise
            if not replayed:
                return self._send_and_complete(presigned, source, name, size, kind, progress)
            try:
                return self.complete_upload(presigned.id)
            except CliptextError as error:
                if error.code in GONE_UPLOAD_CODES:
                    continue
                if error.code != "UPLOAD_MISSING" and not _busy(error):
                    raise
            # no bytes yet, or a PUT of the earlier attempt still being received (_put waits for it)
            return self._send_and_complete(presigned, source, name, size, kind, progress)
        raise CliptextError(
            "CONFLICT",
            f"Every upload reserved under this idempotency key is gone ({MAX_UPLOAD_GENERATIONS} tried): "
            "use a new key",
            {"idempotency_key": key},
        )

    def _send_and_complete(
        self,
        presigned: PresignedUpload,
        source: IO[bytes],
        name: str,
        size: int,
        kind: str,
        progress: ProgressCallback | None,
    ) -> Upload:
        """PUT the bytes and complete; a failed upload is given back (see upload())."""
        try:
            self._put(presigned, source, name, size, kind, progress)
            return self.complete_upload(presigned.id)
        except KeyboardInterrupt:  # the user is waiting for the prompt: no Retry-After sleeps
            if not self._give_back(presigned.id, within=INTERRUPTED_GIVE_BACK):
                raise UploadInterrupted(presigned.id) from None  # says which upload still holds a slot
            raise
        except BaseException:  # refused, the file unreadable midway: the bytes will not come
            self._give_back(presigned.id)
            raise

    def _give_back(self, upload_id: str, within: float | None = None) -> bool:
        """Best effort: delete a failed upload, else its slot is held until its URL expires. The server
        may still be ending the PUT the client just dropped (409 with Retry-After): a few short waits.

        `within` seconds bound it all (after Ctrl-C): a 429 on the DELETE (the very rate limit the
        interrupted upload was waiting out) was slept through, each Retry-After up to max_retries
        times, before the command could exit. Whether the upload is gone."""
        deadline = None if within is None else time.monotonic() + within
        for attempt in range(GIVE_BACK_TRIES):
            try:
                self._request("DELETE", f"/uploads/{upload_id}", gone_ok=True, deadline=deadline)
                return True
            except CliptextError as error:
                if error.code == ErrorCode.NOT_FOUND:  # gone already (refused at complete, or canceled)
                    return True
                if not _busy(error) or attempt == GIVE_BACK_TRIES - 1:
                    return False
            except Exception:
                return False
            if deadline is not None and time.monotonic() + 0.5 >= deadline:
                return False
            time.sleep(0.5)
        return False

    def delete_upload(self, upload_id: str) -> None:
        """Delete an upload no transcription uses: its bytes go and its concurrent-upload slot is free.

        A 404 answering the automatic retry of a DELETE whose first answer was lost is success."""
        self._request("DELETE", f"/uploads/{upload_id}", gone_ok=True)

    def _put(
        self,
        presigned: PresignedUpload,
        source: IO[bytes],
        name: str,
        size: int,
        kind: str,
        progress: ProgressCallback | None,
    ) -> None:
        """PUT the bytes to the presigned URL, streamed.

        A PUT may be sent again (S3 keeps the last whole one; the API's local storage takes a PUT
        again once the one before failed), and an upload left unsent holds one of the plan's
        concurrent uploads for an hour: so a PUT that got no answer, a gateway's 502/503/504, or was
        asked to come back later (429, 503, the 409 of a PUT of this upload still running, all with
        Retry-After), is sent again from the start, at most `max_retries` times, when the file can seek
        back. After an unanswered or gateway-answered attempt, the 409 saying the URL was used means
        that attempt's bytes arrived: complete checks them."""
        body = _ProgressBody(source, size, progress)
        headers = {"Content-Type": kind, **presigned.headers, "Content-Length": str(size)}
        can_resend = source.seekable()
        attempt = 0
        unanswered = False
        while True:
            try:
                response = self._session.request(
                    presigned.method, presigned.url, data=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                if can_resend and attempt < self.max_retries:
                    attempt += 1
                    unanswered = True
                    time.sleep(_backoff(attempt))
                    continue
                raise CliptextError(
                    "SERVICE_UNAVAILABLE",
                    f"Upload of {name} to storage failed: {exc}",
                    {"upload_id": presigned.id, "attempts": attempt + 1},
                ) from exc
            if response.status_code < 400:
                return
            error = _error_from_response(response)
            error.details.setdefault("upload_id", presigned.id)
            if unanswered and error.status == 409 and error.retry_after is None:
                return
            # a gateway's 502/504 page (a proxy in front of storage) is retried as a lost connection is;
            # the API may have received the bytes behind it, so the resend's 409 "URL used" is success
            wait = self._retry_wait(error, attempt, keyed=False, safe=True) if can_resend else None
            unanswered = unanswered or error.status in GATEWAY_STATUSES
            if wait is None and can_resend and _busy(error) and attempt < self.max_retries:
                wait = error.retry_after
            if wait is None:
                raise error
            attempt += 1
            time.sleep(wait)

    # -- transcriptions -----------------------------------------------------------------------------

    def create_transcription(
        self,
        upload_id: str | None = None,
        *,
        file: str | os.PathLike[str] | IO[bytes] | None = None,
        filename: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        webhook_url: str | None = None,
        word_timestamps: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Transcription:
        """Queue a transcription of an upload (or of `file`, sent as multipart in the same request).

        The API tells the format by the file name: `filename=` names a file object without one
        (ValueError otherwise, before any request). An Idempotency-Key is generated when none is given,
        so a retry after a network error cannot queue the same work twice; an error raised carries it
        in `details["idempotency_key"]`, so the caller can ask again and learn the outcome."""
        if (upload_id is None) == (file is None):
            raise CliptextError("VALIDATION_ERROR", "Give exactly one of upload_id and file")
        if filename is not None and file is None:
            raise ValueError("filename= goes with file=")
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        options = {
            "language": language,
            "prompt": prompt,
            "webhook_url": webhook_url,
            "word_timestamps": word_timestamps,
        }
        options = {k: v for k, v in options.items() if v is not None}
        try:
            if upload_id is not None:
                body = {"upload_id": upload_id, **options}
                return Transcription.from_json(
                    self._json("POST", "/transcriptions", json=body, headers=headers)
                )
            if isinstance(file, (str, os.PathLike)):
                with open(file, "rb") as handle:
                    return self._create_multipart(handle, filename or Path(file).name, options, headers)
            name = _part_name(file, filename)  # type: ignore[arg-type]
            return self._create_multipart(file, name, options, headers)  # type: ignore[arg-type]
        except CliptextError as error:
            error.details.setdefault("idempotency_key", headers["Idempotency-Key"])
            raise

    def _create_multipart(
        self, handle: IO[bytes], name: str, options: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Transcription:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()}
        data = self._json(
            "POST", "/transcriptions", files={"file": (name, handle, kind)}, data=form, headers=headers
        )
        return Transcription.from_json(data)

    @overload
    def get_transcription(self, transcription_id: str) -> Transcription: ...
    @overload
    def get_transcription(
        self,
        transcription_id: str,
        format: Literal["json", "verbose_json"],
        *,
        timestamp_granularities: Sequence[str] | None = None,
    ) -> Transcription: ...
    @overload
    def get_transcription(self, transcription_id: str, format: Literal["text", "srt", "vtt"]) -> str: ...
    @overload
    def get_transcription(  # a format only known at run time (a variable of type Format)
        self,
        transcription_id: str,
        format: Format,
        *,
        timestamp_granularities: Sequence[str] | None = None,
    ) -> Transcription | str: ...

    def get_transcription(
        self,
        transcription_id: str,
        format: Format = "json",
        *,
        timestamp_granularities: Sequence[str] | None = None,
    ) -> Transcription | str:
        """The transcription (json), OpenAI's verbose_json of a completed one (segments with decoding
        details; `timestamp_granularities=("segment", "word")` adds `.words`), or the transcript as
        text / SRT / WebVTT. Transcript formats of a transcription not completed are CONFLICT (409)."""
        params: dict[str, Any] = {"format": format}
        if timestamp_granularities:
            params["timestamp_granularities"] = list(timestamp_granularities)
        response = self._request("GET", f"/transcriptions/{transcription_id}", params=params)
        if format in TEXT_FORMATS:
            content_type = response.headers.get("Content-Type", "")
            if content_type.startswith("application/json"):
                raise CliptextError(
                    "VALIDATION_ERROR",
                    f"This server does not render format={format} (it answered JSON)",
                    {"format": format},
                    response.status_code,
                )
            if content_type.startswith("text/html"):  # a proxy's or a web server's page, no transcript
                raise CliptextError(
                    "INTERNAL",
                    f"The API answered format={format} with an HTML page (is the base URL the API's /v1?)",
                    {"format": format},
                    response.status_code,
                    request_id=response.headers.get("X-Request-Id"),
                )
            response.encoding = response.encoding or "utf-8"
            return response.text
        body = _decoded(response, f"GET /transcriptions/{transcription_id}")
        if format != "verbose_json":
            return Transcription.from_json(body)
        # OpenAI's object has no id or status: it exists only for completed transcriptions
        transcription = Transcription.from_json({"id": transcription_id, "status": "completed", **body})
        return dataclasses.replace(transcription, raw=body)

    def list_transcriptions(self, status: str | None = None, *, limit: int = 100) -> Iterator[Transcription]:
        """Every transcription, newest first, fetching pages of `limit` as the iterator advances."""
        starting_after: str | None = None
        while True:
            page = self._json(
                "GET",
                "/transcriptions",
                params={"limit": limit, "starting_after": starting_after, "status": status},
            )
            items, has_more = _page(page, "GET /transcriptions")
            for item in items:
                yield Transcription.from_json(item)
            if not has_more or not items:
                return
            starting_after = items[-1]["id"]

    def delete_transcription(self, transcription_id: str) -> None:
        """Delete a transcription (a queued or running one is canceled first by the API).

        A 404 answering the automatic retry of a DELETE whose first answer was lost is success: that
        first DELETE did it."""
        self._request("DELETE", f"/transcriptions/{transcription_id}", gone_ok=True)

    def wait(
        self,
        transcription_id: str,
        timeout: float | None = None,
        *,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        on_update: Callable[[Transcription], None] | None = None,
    ) -> Transcription:
        """Poll until the status is final, backing off from `poll_interval` to `max_poll_interval`.

        Returns the transcription whatever its final status (check `.status` / `.error`); raises
        CliptextError("TIMEOUT") when `timeout` seconds pass first, or as soon as the API asks for a
        pause (429 Retry-After) that would end past them. `on_update` sees every poll. An API that
        cannot be reached or answers 502/503/504 (a restart, a deploy) is polled again after a capped
        back-off until `timeout` (with None, for as long as it takes), then that error is raised
        (SERVICE_UNAVAILABLE, not TIMEOUT: the API was not there to say); any other error (401, 403,
        404...) is raised at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        status: str | None = None
        outage = 0  # polls in a row that found the API unreachable
        while True:
            try:
                body = self._json(
                    "GET", f"/transcriptions/{transcription_id}", params={"format": "json"}, deadline=deadline
                )
            except CliptextError as error:
                if error.code == "TIMEOUT" and error.status is None:
                    raise CliptextError(
                        "TIMEOUT",
                        f"{transcription_id} not final within {timeout:g} s: {error.message}",
                        {"id": transcription_id, "status": status},
                    ) from error
                if not _unreachable(error):
                    raise
                outage += 1
                self._sleep_through_outage(error, outage, deadline, transcription_id, timeout, status)
                continue
            outage = 0
            transcription = Transcription.from_json(body)
            status = transcription.status
            if on_update:
                on_update(transcription)
            if transcription.done:
                return transcription
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CliptextError(
                        "TIMEOUT",
                        f"{transcription_id} still {transcription.status} after {timeout:g} s",
                        {"id": transcription_id, "status": transcription.status},
                    )
                time.sleep(min(interval, left))
            else:
                time.sleep(interval)
            interval = min(interval * 1.5, max_poll_interval)

    def _sleep_through_outage(
        self,
        error: CliptextError,
        outage: int,
        deadline: float | None,
        transcription_id: str,
        timeout: float | None,
        status: str | None,
    ) -> None:
        """wait()'s pause after its `outage`-th poll in a row found the API unreachable: a back-off
        capped at 5 s (longer only when Retry-After asks, up to max_retry_wait), cut at the deadline;
        the error itself, naming the transcription, once the deadline has passed."""
        pause = _backoff(outage)
        if error.retry_after is not None:
            pause = max(pause, min(error.retry_after, self.max_retry_wait))
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                error.details.setdefault("id", transcription_id)
                error.details.setdefault("status", status)
                raise error
            pause = min(pause, left)
        time.sleep(pause)

    def transcribe(
        self,
        path: str | os.PathLike[str] | IO[bytes],
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        language: str | None = None,
        prompt: str | None = None,
        webhook_url: str | None = None,
        word_timestamps: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Transcription:
        """Upload, queue and (with wait=True) wait for one file; the result may be failed (see .status).

        With `idempotency_key`, the whole call may be repeated with the same key after any failure: the
        upload reserved by an earlier call is resumed (see upload()), and the transcription it created,
        if it got that far, is answered again: one upload, one transcription, never a 409. An error
        raised carries the key in `details["idempotency_key"]`."""
        upload_key = None if idempotency_key is None else _upload_key(idempotency_key)
        try:
            upload = self.upload(path, progress=progress, idempotency_key=upload_key)
        except CliptextError as error:
            if idempotency_key is not None:
                error.details.setdefault("idempotency_key", idempotency_key)
            raise
        transcription = self.create_transcription(
            upload.id,
            language=language,
            prompt=prompt,
            webhook_url=webhook_url,
            word_timestamps=word_timestamps,
            idempotency_key=idempotency_key,
        )
        return self.wait(transcription.id, timeout) if wait else transcription

    # -- organizations ------------------------------------------------------------------------------

    def list_orgs(self) -> list[Organization]:
        """The organization the key belongs to (a key speaks for one organization: a list of one)."""
        items, _ = _page(self._json("GET", "/orgs"), "GET /orgs")
        return [Organization.from_json(item) for item in items]

    def get_org(self, org_id: str) -> Organization:
        return Organization.from_json(self._json("GET", f"/orgs/{org_id}"))

    def add_member(self, org_id: str, email: str, role: str = "member") -> Member:
        """Add a user (created when new) to the organization; owners and admins only."""
        return Member.from_json(
            self._json("POST", f"/orgs/{org_id}/members", json={"email": email, "role": role})
        )

    def list_members(self, org_id: str, *, limit: int = 100) -> list[Member]:
        """The organization's members with their roles (any member may list them), in the API's order.
        Every page of `limit`, as list_keys()."""
        return [Member.from_json(item) for item in self._every_page(f"/orgs/{org_id}/members", limit)]

    def change_member_role(self, org_id: str, member_id: str, role: str) -> Member:
        """Set the role of member `member_id` (usr_…): owners any, admins between member and admin only
        (FORBIDDEN otherwise); the last owner is not demoted (CONFLICT). Setting a role twice does the
        same, so it is retried after a network error."""
        return Member.from_json(
            self._json(
                "PATCH", f"/orgs/{org_id}/members/{member_id}", json={"role": role}, retry_network=True
            )
        )

    def remove_member(self, org_id: str, member_id: str) -> None:
        """Remove member `member_id` (usr_…) and every key they hold in the organization (owners and
        admins; only owners remove owners; anyone themselves). The last owner is kept (CONFLICT).
        A 404 answering the automatic retry of a DELETE whose first answer was lost is success."""
        self._request("DELETE", f"/orgs/{org_id}/members/{member_id}", gone_ok=True)

    def webhook_secret(self, org_id: str) -> WebhookSecret:
        """The secret webhook deliveries are signed with (to verify them); owners and admins only."""
        return WebhookSecret.from_json(self._json("GET", f"/orgs/{org_id}/webhook-secret"))

    def rotate_webhook_secret(self, org_id: str) -> WebhookSecret:
        """Replace the webhook secret; for 24 h deliveries are signed with the old one too (see
        `previous_secret_valid_until`). Owners and admins only. Not retried on a network error: a
        rotation whose answer was lost may have happened, so call webhook_secret() to see."""
        return WebhookSecret.from_json(self._json("POST", f"/orgs/{org_id}/webhook-secret/rotate"))

    def create_key(self, org_id: str, member_id: str | None = None) -> ApiKey:
        """A new API key for yourself, or (owners and admins) for the member `member_id` (usr_…).
        `.key` is the key itself: the API shows it this once, so store it now. Not retried after a
        network error (a retry would create a second key)."""
        body = {} if member_id is None else {"member_id": member_id}
        return ApiKey.from_json(self._json("POST", f"/orgs/{org_id}/keys", json=body))

    def list_keys(self, org_id: str, *, limit: int = 100) -> list[ApiKey]:
        """The organization's keys, oldest first, revoked ones too (owners and admins); a member's own
        for a member. Every page of `limit`."""
        return [ApiKey.from_json(item) for item in self._every_page(f"/orgs/{org_id}/keys", limit)]

    def _every_page(self, path: str, limit: int) -> list[Mapping[str, Any]]:
        """The items of every page of a list `path` answers, `limit` a page, following `has_more`."""
        items: list[Mapping[str, Any]] = []
        starting_after: str | None = None
        while True:
            page = self._json("GET", path, params={"limit": limit, "starting_after": starting_after})
            found, has_more = _page(page, f"GET {path}")
            items.extend(found)
            if not has_more or not found:
                return items
            starting_after = found[-1]["id"]

    def revoke_key(self, org_id: str, key_id: str) -> None:
        """Revoke a key (key_…): refused by the API from its next request. Revoking a revoked key
        succeeds; the organization's last owner key is refused (CONFLICT)."""
        self._request("DELETE", f"/orgs/{org_id}/keys/{key_id}")
