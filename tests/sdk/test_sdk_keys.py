"""The SDK's create_key / list_keys / revoke_key against the real API (gunicorn, 8 threads, the auth cache
on at its default): a member added through the API gets a key without the operator, and a key
revoked through the API is refused from the next request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cliptext.sdk import ApiKey, Client, CliptextError
from tests.sdk.conftest import ApiServer, Org


def error_of(call: Callable[[], object]) -> tuple[str, int | None]:
    with pytest.raises(CliptextError) as caught:
        call()
    return caught.value.code, caught.value.status


def test_members_get_rotate_and_revoke_keys_through_the_sdk(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    org = make_org("enterprise")
    owner = Client(api_key=org.key, base_url=api_server.base_url)
    (first,) = owner.list_keys(org.id)
    assert isinstance(first, ApiKey) and org.key.startswith(first.prefix) and first.key is None
    assert first.member_email.startswith("owner-") and first.revoked_at is None

    added = owner.add_member(org.id, "keys.member@example.com", "member")
    given = owner.create_key(org.id, added.id)
    assert given.key.startswith(given.prefix) and given.member_id == added.id
    assert given.key not in repr(given)  # a log line showing the object does not leak the key
    member = Client(api_key=given.key, base_url=api_server.base_url)
    assert member.get_org(org.id).role == "member"

    # the member: a key of their own (a rotation), nothing for others, only their keys listed
    own = member.create_key(org.id)
    assert own.member_id == added.id and own.member_email == "keys.member@example.com"
    assert error_of(lambda: member.create_key(org.id, first.member_id)) == ("FORBIDDEN", 403)
    assert {key.id for key in member.list_keys(org.id)} == {given.id, own.id}
    assert error_of(lambda: member.revoke_key(org.id, first.id)) == ("FORBIDDEN", 403)
    member.revoke_key(org.id, given.id)
    assert error_of(lambda: member.get_org(org.id)) == ("UNAUTHORIZED", 401)  # the next request
    rotated = Client(api_key=own.key, base_url=api_server.base_url)
    assert rotated.get_org(org.id).role == "member"

    # the owner sees every key, revokes the member's, and cannot revoke the last owner key
    listed = {key.id: key for key in owner.list_keys(org.id)}
    assert set(listed) == {first.id, given.id, own.id} and listed[given.id].revoked_at is not None
    assert all(key.key is None and "key" not in key.raw for key in listed.values())
    assert [key.id for key in owner.list_keys(org.id, limit=1)] == list(listed)  # every page, in order
    owner.revoke_key(org.id, own.id)
    assert error_of(lambda: rotated.get_org(org.id)) == ("UNAUTHORIZED", 401)
    assert error_of(lambda: owner.revoke_key(org.id, first.id)) == ("CONFLICT", 409)
    assert owner.get_org(org.id).role == "owner"


def test_another_organizations_keys_are_not_found(
    api_server: ApiServer, make_org: Callable[..., Org]
) -> None:
    mine, theirs = make_org("enterprise"), make_org("enterprise")
    sdk = Client(api_key=mine.key, base_url=api_server.base_url)
    their_key = Client(api_key=theirs.key, base_url=api_server.base_url).list_keys(theirs.id)[0]
    assert error_of(lambda: sdk.list_keys(theirs.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: sdk.create_key(theirs.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: sdk.revoke_key(theirs.id, their_key.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: sdk.revoke_key(mine.id, their_key.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: sdk.create_key(mine.id, their_key.member_id)) == ("NOT_FOUND", 404)
    assert Client(api_key=theirs.key, base_url=api_server.base_url).get_org(theirs.id).role == "owner"
