"""cliptext.sdk.Client against the real API (gunicorn subprocess, SQLite, local storage, Redis)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
import requests

from cliptext.sdk import Client, CliptextError, Transcription, Upload
from tests.sdk.conftest import AUDIO, ApiServer, Org


@pytest.fixture
def client(api_server: ApiServer, shared_org: Org) -> Client:
    with Client(api_key=shared_org.key, base_url=api_server.base_url, timeout=30) as sdk:
        yield sdk


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPTEXT_API_KEY", "ck_from_env")
    monkeypatch.setenv("CLIPTEXT_BASE_URL", "http://api.example:9000/v1/")
    sdk = Client()
    assert (sdk.api_key, sdk.base_url) == ("ck_from_env", "http://api.example:9000/v1")
    monkeypatch.delenv("CLIPTEXT_BASE_URL")
    assert Client(api_key="k").base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://api.example:9000", "http://api.example:9000/v1"),
        ("http://api.example:9000/", "http://api.example:9000/v1"),
        ("https://api.example/cliptext/v1", "https://api.example/cliptext/v1"),
        ("https://api.example/cliptext", "https://api.example/cliptext"),  # a proxy's prefix: as given
    ],
)
def test_a_deployments_address_alone_means_its_v1(given: str, used: str) -> None:
    """`CLIPTEXT_BASE_URL=http://host:8000` made every call a 404 "Not found" that named no cause."""
    assert Client(api_key="k", base_url=given).base_url == used


def test_the_address_alone_reaches_the_api(api_server: ApiServer, shared_org: Org) -> None:
    address = api_server.base_url.removesuffix("/v1")
    with Client(api_key=shared_org.key, base_url=address, timeout=30) as sdk:
        assert all(item.id.startswith("txn_") for item in sdk.list_transcriptions(limit=1))


def test_upload_streams_with_progress_then_create_is_queued(client: Client) -> None:
    path = AUDIO / "jfk.flac"  # 1.1 MB: more than one 1 MiB chunk
    size = path.stat().st_size
    seen: list[tuple[int, int]] = []
    upload = client.upload(path, progress=lambda sent, total: seen.append((sent, total)))
    assert isinstance(upload, Upload)
    assert upload.id.startswith("upl_") and upload.status == "completed"
    assert (upload.size, upload.filename, upload.content_type) == (size, "jfk.flac", "audio/flac")
    assert seen[0] == (0, size) and seen[-1] == (size, size) and len(seen) >= 3
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)

    created = client.create_transcription(upload.id, language="en", prompt="Kennedy", word_timestamps=True)
    assert isinstance(created, Transcription)
    assert created.id.startswith("txn_") and created.status == "queued" and not created.done
    assert created.upload_id == upload.id
    assert created.options["language"] == "en" and created.options["word_timestamps"] is True

    fetched = client.get_transcription(created.id)
    assert (fetched.id, fetched.status, fetched.upload_id) == (created.id, "queued", upload.id)
    assert fetched.created_at is not None and fetched.created_at.tzinfo is not None
    with pytest.raises(CliptextError) as caught:
        client.get_transcription(created.id, "srt")
    assert (caught.value.code, caught.value.status) == ("CONFLICT", 409), "no subtitles before completion"


def test_upload_from_a_file_object(client: Client) -> None:
    data = (AUDIO / "jfk.mp3").read_bytes()
    upload = client.upload(io.BytesIO(data), filename="speech.mp3")
    assert (upload.size, upload.filename, upload.content_type) == (len(data), "speech.mp3", "audio/mpeg")


def test_multipart_create_and_idempotency_key(client: Client) -> None:
    first = client.create_transcription(file=AUDIO / "jfk.mp3", idempotency_key="sdk-test-same-key")
    again = client.create_transcription(file=AUDIO / "jfk.mp3", idempotency_key="sdk-test-same-key")
    assert first.status == "queued" and first.upload_id
    assert again.id == first.id, "the same Idempotency-Key must not queue the work twice"
    other = client.create_transcription(upload_id=first.upload_id)
    assert other.id != first.id


def test_list_paginates_newest_first_and_filters(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org = make_org("enterprise")
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    upload = sdk.upload(AUDIO / "jfk.mp3")
    created = [sdk.create_transcription(upload.id).id for _ in range(5)]
    pages: list[str] = []
    sdk._session.hooks["response"].append(lambda r, *a, **k: pages.append(r.request.url))

    listed = list(sdk.list_transcriptions(limit=2))
    assert [t.id for t in listed] == created[::-1]
    assert sum("/transcriptions?" in url for url in pages) == 3  # 2 + 2 + 1
    assert [t.id for t in sdk.list_transcriptions(status="queued", limit=100)] == created[::-1]
    assert list(sdk.list_transcriptions(status="completed")) == []


def test_delete_then_get_is_not_found(client: Client) -> None:
    created = client.create_transcription(file=AUDIO / "jfk.mp3")
    client.delete_transcription(created.id)
    with pytest.raises(CliptextError) as caught:
        client.get_transcription(created.id)
    assert (caught.value.code, caught.value.status) == ("NOT_FOUND", 404)
    with pytest.raises(CliptextError) as caught:
        client.delete_transcription(created.id)
    assert caught.value.code == "NOT_FOUND"


def test_errors_carry_the_envelope(api_server: ApiServer, client: Client) -> None:
    with pytest.raises(CliptextError) as caught:
        Client(api_key="ck_not_a_key", base_url=api_server.base_url).list_orgs()
    assert (caught.value.code, caught.value.status) == ("UNAUTHORIZED", 401)

    with pytest.raises(CliptextError) as caught:
        client.presign_upload("a.mp3", "audio/mpeg", 0)
    assert (caught.value.code, caught.value.status) == ("VALIDATION_ERROR", 422)
    assert "size" in caught.value.details["fields"]

    with pytest.raises(CliptextError) as caught:
        client.create_transcription("upl_doesnotexist")
    assert caught.value.status == 404 and caught.value.code == "NOT_FOUND"

    with pytest.raises(CliptextError) as caught:
        client.create_transcription(
            file=io.BytesIO(b"this is not audio at all" * 100), filename="notes.txt", language="en"
        )
    assert (caught.value.code, caught.value.status) == ("VALIDATION_ERROR", 422)  # the spec's example
    assert caught.value.details.get("field") == "file" and caught.value.message


def test_network_errors_are_service_unavailable() -> None:
    sdk = Client(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    with pytest.raises(CliptextError) as caught:
        sdk.list_orgs()
    assert caught.value.code == "SERVICE_UNAVAILABLE" and caught.value.status is None
    with pytest.raises(CliptextError) as caught:
        Client(api_key="", base_url="http://127.0.0.1:9/v1").list_orgs()
    assert caught.value.code == "UNAUTHORIZED"


def test_wait_times_out_while_queued(client: Client) -> None:
    created = client.create_transcription(file=AUDIO / "jfk.mp3")
    polls: list[str] = []
    started = time.monotonic()
    with pytest.raises(CliptextError) as caught:
        client.wait(created.id, timeout=1.5, poll_interval=0.2, on_update=lambda t: polls.append(t.status))
    assert caught.value.code == "TIMEOUT" and caught.value.status is None
    assert 1.4 < time.monotonic() - started < 10
    assert polls and set(polls) == {"queued"}


def test_orgs_and_members(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org = make_org("pro")
    sdk = Client(api_key=org.key, base_url=api_server.base_url)
    (listed,) = sdk.list_orgs()
    assert (listed.id, listed.plan, listed.role) == (org.id, "pro", "owner")
    assert listed.limits is not None and listed.limits.requests_per_minute == 60
    member = sdk.add_member(org.id, "new.member@example.com", "admin")
    assert (member.email, member.role) == ("new.member@example.com", "admin") and member.id.startswith("usr_")
    assert sdk.get_org(org.id).member_count == 2
    with pytest.raises(CliptextError) as caught:
        sdk.add_member(org.id, "new.member@example.com", "member")
    assert (caught.value.code, caught.value.status) == ("CONFLICT", 409)
    with pytest.raises(CliptextError) as caught:
        sdk.get_org("org_doesnotexist")
    assert caught.value.code == "NOT_FOUND"


def _exhaust(api_server: ApiServer, key: str) -> float:
    """Spend the free plan's 10 requests; returns the Retry-After of the first 429."""
    for _ in range(30):
        response = requests.get(
            f"{api_server.base_url}/orgs", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "RATE_LIMITED"
            return float(response.headers["Retry-After"])
    raise AssertionError("the free plan never answered 429")


def test_rate_limit_raises_when_not_retried(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org = make_org("free")
    _exhaust(api_server, org.key)
    started = time.monotonic()
    sdk = Client(api_key=org.key, base_url=api_server.base_url, max_retries=3, max_retry_wait=0.5)
    with pytest.raises(CliptextError) as caught:
        sdk.list_orgs()
    assert (caught.value.code, caught.value.status) == ("RATE_LIMITED", 429)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0.5
    assert time.monotonic() - started < 5, "a Retry-After above max_retry_wait must not be slept"


def test_rate_limit_retry_after_is_honoured(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    """Free plan (10/min): the 11th request gets 429 + Retry-After; the client sleeps, then retries."""
    org = make_org("free")
    retry_after = _exhaust(api_server, org.key)
    started = time.monotonic()
    orgs = Client(api_key=org.key, base_url=api_server.base_url, max_retries=2).list_orgs()
    waited = time.monotonic() - started
    assert [o.id for o in orgs] == [org.id]
    assert retry_after - 2 <= waited <= retry_after + 15
