"""Where upload bytes live: a local folder (settings.data_dir/storage) or S3 (`s3://bucket/prefix`).

Keys are made by the API from public ids (`uploads/org_…/upl_…`), never from user input; `_check_key`
refuses anything else so no path can escape the storage root.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

import boto3.exceptions
import botocore.exceptions

from cliptext import file_locks

# object storage that cannot answer, for the API (503) and the worker (retried) alike
STORAGE_ERRORS = (
    botocore.exceptions.BotoCoreError,  # unreachable, timed out, no credentials
    botocore.exceptions.ClientError,  # refused: no such bucket, access denied, slow down
    boto3.exceptions.Boto3Error,  # a transfer that broke off (upload_fileobj, download_file)
)
_MISSING = {"404", "NoSuchKey", "NotFound"}

_KEY_RE = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*\Z")
_CHUNK = 1 << 16


class TooLarge(Exception):
    """The stream carried more bytes than allowed (the partial object is removed)."""


class Busy(Exception):
    """Another request or process holds the key's write lock (a PUT receiving it, a complete checking it)."""


# beside each key in LocalStorage: a temp file while it is written, a lock file while it is held
_PART, _LOCK = ".part-", ".lock-"

# where S3Storage.local_copy downloads: the system's temp folder unless use_scratch_dir says otherwise
_scratch_dir: Path | None = None


def use_scratch_dir(folder: Path | None) -> None:
    """Download S3 objects into `folder` from now on in this process (None: the system's temp folder).

    A worker's work horse gets a folder of its own that the worker removes once the horse has ended: a
    horse SIGKILLed mid-job (stopped, timed out, out of memory) never runs the TemporaryDirectory's
    cleanup, and the audio of a deleted transcription would stay on the worker's disk.
    """
    global _scratch_dir
    _scratch_dir = folder


def _hold(path: Path, *, create: bool) -> int | None:
    """An fd of `path` holding its exclusive flock, or None while another open file holds it (or, when
    not creating, once it is gone). The kernel lets go when the holder dies, kill -9 included.

    A holder removes its file before it lets go: whoever opened it meanwhile sees the path no longer
    names the inode it locked, and opens the path again.
    """
    for _ in range(3):
        try:
            fd = file_locks.hold(path, wait=False, create=create)
        except FileNotFoundError:
            if create:
                raise
            return None
        if fd is None:
            return None
        if _still_named(path, fd):
            return fd
        os.close(fd)
        if not create:
            return None
    return None


def _still_named(path: Path, fd: int) -> bool:
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _remove_unless_held(path: Path) -> bool:
    """Remove `path` unless a live writer holds it; True when removed."""
    fd = _hold(path, create=False)
    if fd is None:
        return False
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


def _remove_parts(target: Path) -> None:
    """Remove the temp files of `target` that no live writer holds."""
    for part in target.parent.glob(f"{_PART}{target.name}.*"):
        _remove_unless_held(part)


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    is_local: bool

    def write_stream(self, key: str, stream: BinaryIO, limit: int) -> int: ...
    def exclusive(self, key: str) -> AbstractContextManager[None]: ...
    def sweep_leftovers(self, older_than_s: float) -> int: ...
    def size(self, key: str) -> int | None: ...
    def delete(self, key: str) -> None: ...
    def local_copy(self, key: str) -> AbstractContextManager[Path]: ...
    def presigned_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]: ...


class LocalStorage:
    """Files under one root; writes go to a temp file renamed into place, so a half upload never shows.

    The temp file is named after its key (`.part-<name>.<random>`) and locked while written, so that
    delete(key) removes what a writer killed mid-write left, and never what a live one is writing.
    """

    is_local = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def write_stream(self, key: str, stream: BinaryIO, limit: int) -> int:
        """Copy at most `limit` bytes of `stream` to `key`; raises TooLarge past it."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_PART}{target.name}.")
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: never contended, only seen as live by the sweeps
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise TooLarge(limit)
                    out.write(chunk)
                out.flush()
                os.replace(tmp, target)  # still locked: no sweep removes it first
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _remove_parts(target)  # what writers killed before this one left: the key is whole now
        return written

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """The bytes, and the temp and lock files a process killed while writing or holding `key` left."""
        target = self.path(key)
        target.unlink(missing_ok=True)
        _remove_parts(target)
        _remove_unless_held(self._lock_path(key))

    def _lock_path(self, key: str) -> Path:
        target = self.path(key)
        return target.with_name(f"{_LOCK}{target.name}")

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold `key`'s write lock (a `.lock-` file beside it) for the block; Busy while another request
        or process holds it. A process killed while holding it lets go at once; the file it leaves is
        taken by the next holder, or removed with the key or by sweep_leftovers."""
        lock = self._lock_path(key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _hold(lock, create=True)
        if fd is None:
            raise Busy(key)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # still held: anyone who opened it meanwhile opens anew
            os.close(fd)

    def sweep_leftovers(self, older_than_s: float) -> int:
        """Remove temp and lock files older than `older_than_s` that no live writer holds: left by a
        process killed mid-write whose key was never deleted (or named before keys were in the names)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for pattern in (f"{_PART}*", f"{_LOCK}*"):
            for path in self.root.rglob(pattern):
                try:
                    stale = path.is_file() and path.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if stale and _remove_unless_held(path):
                    removed += 1
        return removed

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self.path(key)

    def presigned_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        raise NotImplementedError("local uploads go through the API's signed content URL")


class S3Storage:
    """An S3-compatible bucket through boto3 (credentials/endpoint from the usual AWS variables)."""

    is_local = False

    def __init__(self, bucket: str, prefix: str = "", public_endpoint: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        config = Config(signature_version="s3v4")
        self.client = boto3.client("s3", config=config)
        # a SigV4 URL signs its host: URLs for clients are signed for the address they reach
        self._url_signer = (
            boto3.client("s3", config=config, endpoint_url=public_endpoint)
            if public_endpoint
            else self.client
        )

    def _object(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def write_stream(self, key: str, stream: BinaryIO, limit: int) -> int:
        with tempfile.TemporaryFile() as spool:
            written = 0
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise TooLarge(limit)
                spool.write(chunk)
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, self._object(key))
        return written

    def _object_gone(self, error: botocore.exceptions.ClientError, key: str) -> bool:
        """Whether a failed call means the object is not there. S3 answers a HEAD in a missing bucket
        with the same bare 404: that one is ours (503), and the listing under the key that tells them
        apart raises it (it needs only prefix-scoped s3:ListBucket)."""
        if error.response.get("Error", {}).get("Code") not in _MISSING:
            return False
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._object(key), MaxKeys=1)
        return True

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._object(key))["ContentLength"])
        except botocore.exceptions.ClientError as error:
            if self._object_gone(error, key):
                return None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Nothing to hold: S3 takes the PUTs itself, and keeps an object whole until it is replaced."""
        yield

    def sweep_leftovers(self, older_than_s: float) -> int:
        """Nothing is left behind: the spool of write_stream is an anonymous temp file."""
        return 0

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A temporary file with the object's bytes; a path that does not exist when the object is gone
        (as LocalStorage gives), so the worker fails it as UPLOAD_MISSING and does not retry. It lies in
        the scratch folder when one is set (use_scratch_dir)."""
        with tempfile.TemporaryDirectory(dir=_scratch_dir) as folder:
            path = Path(folder) / "object"
            try:  # the transfer writes under another name and renames once whole
                self.client.download_file(self.bucket, self._object(key), str(path))
            except botocore.exceptions.ClientError as error:
                if not self._object_gone(error, key):
                    raise
            yield path

    def presigned_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        """A PUT URL that signs the content type and length: S3 itself refuses a body of another size
        (HTTP clients send the Content-Length of what they send, so no header to add)."""
        url = self._url_signer.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._object(key),
                "ContentType": content_type,
                "ContentLength": size,
            },
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )
        return url, {"Content-Type": content_type}


def open_storage(storage_url: str, public_endpoint: str = "") -> Storage:
    """`file:///abs/path` (or a bare path) → LocalStorage; `s3://bucket/prefix` → S3Storage, whose
    presigned URLs go to `public_endpoint` when given (S3_PUBLIC_ENDPOINT_URL)."""
    parsed = urlparse(storage_url)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path, public_endpoint)
    if parsed.scheme in {"file", ""}:
        return LocalStorage(Path(parsed.path if parsed.scheme else storage_url))
    raise ValueError(f"unsupported STORAGE_URL scheme {parsed.scheme!r}")
