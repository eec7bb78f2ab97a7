"""Where upload bytes live: a local folder (settings.data_dir/storage) or S3 (`s3://bucket/prefix`).

Keys are made by the API from public ids (`uploads/org_…/upl_…`), never from user input; `_check_key`
refuses anything else so no path can escape the storage root.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

import boto3.exceptions
import botocore.exceptions

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


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    is_local: bool

    def write_stream(self, key: str, stream: BinaryIO, limit: int) -> int: ...
    def size(self, key: str) -> int | None: ...
    def delete(self, key: str) -> None: ...
    def local_copy(self, key: str) -> AbstractContextManager[Path]: ...
    def presigned_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]: ...


class LocalStorage:
    """Files under one root; writes go to a temp file renamed into place, so a half upload never shows."""

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
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise TooLarge(limit)
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

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
    def local_copy(self, key: str) -> Iterator[Path]:
        """A temporary file with the object's bytes; a path that does not exist when the object is gone
        (as LocalStorage gives), so the worker fails it as UPLOAD_MISSING and does not retry."""
        with tempfile.TemporaryDirectory() as folder:
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
