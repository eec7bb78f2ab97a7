"""The SDK gives back the concurrent-upload slot of an upload that failed, and can delete one itself:
on the Free plan (one upload at a time) a file refused as not audio blocked every upload for an hour."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import requests

from cliptext.sdk import Client, CliptextError
from tests.sdk.conftest import AUDIO, ApiServer, Org


class _FailingMidway(io.BytesIO):
    """A file whose read fails once the first bytes are out: a disk or network share gone."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError("Input/output error")
        return super().read(1000)


def test_an_upload_whose_file_fails_midway_frees_the_free_plans_slot(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    org = make_org("free")
    with Client(api_key=org.key, base_url=api_server.base_url, timeout=30, max_retries=0) as sdk:
        with pytest.raises((CliptextError, OSError)):
            sdk.upload(_FailingMidway((AUDIO / "jfk.mp3").read_bytes()), filename="jfk.mp3")
        upload = sdk.upload(AUDIO / "jfk.mp3")  # a 429 CONCURRENT_UPLOAD_LIMIT for the next hour before
        assert upload.status == "completed"


def test_delete_upload_gives_the_slot_back(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org = make_org("free")
    with Client(api_key=org.key, base_url=api_server.base_url, timeout=30, max_retries=0) as sdk:
        abandoned = sdk.presign_upload("later.mp3", "audio/mpeg", 1000)
        with pytest.raises(CliptextError) as capped:
            sdk.presign_upload("other.mp3", "audio/mpeg", 1000)
        assert capped.value.code == "CONCURRENT_UPLOAD_LIMIT"
        sdk.delete_upload(abandoned.id)
        assert sdk.presign_upload("other.mp3", "audio/mpeg", 1000).id != abandoned.id
        with pytest.raises(CliptextError) as gone:
            sdk.delete_upload(abandoned.id)
        assert gone.value.code == "NOT_FOUND"


def test_a_put_cut_short_by_its_client_leaves_the_url_for_a_resend(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    """Under gunicorn a body that ended before its Content-Length (the client's connection dropped) was
    taken as the whole upload: the URL counted as used, the client's resend got 409, complete failed on
    the size."""
    org = make_org("free")
    data = (AUDIO / "jfk.mp3").read_bytes()
    with Client(api_key=org.key, base_url=api_server.base_url, timeout=30, max_retries=0) as sdk:
        presigned = sdk.presign_upload("jfk.mp3", "audio/mpeg", len(data))
        url = urlsplit(presigned.url)
        with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
            head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            head += f"Content-Type: audio/mpeg\r\nContent-Length: {len(data)}\r\n\r\n"
            raw.sendall(head.encode() + data[:1000])
            raw.shutdown(socket.SHUT_WR)  # the client is gone: no more bytes will come
            answer = raw.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 422"), answer  # VALIDATION_ERROR
        resent = requests.put(presigned.url, data=data, headers=presigned.headers, timeout=30)
        assert resent.status_code == 200, resent.text
        assert sdk.complete_upload(presigned.id).status == "completed"
