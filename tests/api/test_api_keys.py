"""API keys managed by an organization's members: POST/GET /v1/orgs/{id}/keys, DELETE …/keys/{key_id}.

Before, a member added through the API had no key and only the operator's CLI could issue or revoke
one. Real app, real database (a SQLite file and a PostgreSQL database of the test's own), real Redis.
"""

from __future__ import annotations

import threading

import api.services.keys as key_service
from api.auth import hash_key
from api.models import ApiKey, Organization, utcnow

PAUSE = 0.5
LISTED_FIELDS = {"id", "prefix", "member", "created_at", "last_used_at", "revoked_at"}


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def keys_url(org: Organization, key_id: str | None = None) -> str:
    return f"/v1/orgs/{org.public_id}/keys" + (f"/{key_id}" if key_id else "")


def add_member(client, org: Organization, owner: dict[str, str], email: str, role: str) -> str:
    """The new member's user id (usr_…)."""
    added = client.post(
        f"/v1/orgs/{org.public_id}/members", json={"email": email, "role": role}, headers=owner
    )
    assert added.status_code == 201, added.get_json()
    return added.get_json()["id"]


def create_key(client, org: Organization, headers: dict[str, str], member_id: str | None = None) -> dict:
    body = {} if member_id is None else {"member_id": member_id}
    created = client.post(keys_url(org), json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def key_id_of(app, raw: str) -> str:
    with app.app_context():
        return ApiKey.get(ApiKey.key_hash == hash_key(raw)).public_id


def new_team(client, new_org):
    """An enterprise organization with its owner, an admin and a member, each with a key made through
    the API: (org, {"owner": (user id, headers), "admin": …, "member": …})."""
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    owner_id = client.get(keys_url(org), headers=owner).get_json()["data"][0]["member"]["id"]
    team = {"owner": (owner_id, owner)}
    for role in ("admin", "member"):
        user_id = add_member(client, org, owner, f"{role}@example.com", role)
        team[role] = (user_id, bearer(create_key(client, org, owner, user_id)["key"]))
    return org, team


def test_a_created_key_authenticates_and_is_shown_once(app, client, new_org):
    org, team = new_team(client, new_org)
    member_id, member = team["member"]
    response = client.post(keys_url(org), headers=member)  # no body: a key for the caller
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    created = response.get_json()
    assert set(created) == LISTED_FIELDS | {"key"}
    assert created["id"].startswith("key_") and created["key"].startswith(created["prefix"])
    assert created["member"] == {"id": member_id, "email": "member@example.com"}
    assert created["revoked_at"] is None and created["last_used_at"] is None
    assert (
        client.get(f"/v1/orgs/{org.public_id}", headers=bearer(created["key"])).get_json()["role"] == "member"
    )
    with app.app_context():
        row = ApiKey.get(ApiKey.public_id == created["id"])
        assert row.key_hash == hash_key(created["key"]) and row.membership.user.public_id == member_id
    listed = client.get(keys_url(org), headers=member).get_json()["data"]
    assert created["id"] in [key["id"] for key in listed]


def test_the_list_never_holds_a_hash_or_a_key(app, client, new_org):
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    raws = [owner["Authorization"].split()[1]] + [create_key(client, org, owner)["key"] for _ in range(2)]
    response = client.get(keys_url(org), headers=owner)
    assert response.status_code == 200
    listed = response.get_json()["data"]
    assert [set(key) for key in listed] == [LISTED_FIELDS] * 3
    assert [key["prefix"] for key in listed] == [raw[:11] for raw in raws]  # oldest first
    text = response.get_data(as_text=True)
    for raw in raws:
        assert raw not in text and hash_key(raw) not in text
    assert listed[0]["last_used_at"] is not None and listed[2]["last_used_at"] is None


def test_members_manage_their_own_keys_owners_and_admins_everyones(app, client, new_org):
    org, team = new_team(client, new_org)
    (owner_id, owner), (admin_id, admin), (member_id, member) = team["owner"], team["admin"], team["member"]

    # a member: only their own keys, listed, created and revoked
    for target in (owner_id, admin_id):
        refused = client.post(keys_url(org), json={"member_id": target}, headers=member)
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "FORBIDDEN"
    own = create_key(client, org, member, member_id)
    listed = client.get(keys_url(org), headers=member).get_json()["data"]
    assert {key["member"]["id"] for key in listed} == {member_id} and len(listed) == 2
    owners_key = key_id_of(app, owner["Authorization"].split()[1])
    refused = client.delete(keys_url(org, owners_key), headers=member)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "FORBIDDEN"
    assert client.delete(keys_url(org, own["id"]), headers=member).status_code == 204
    assert client.get("/v1/orgs", headers=bearer(own["key"])).status_code == 401

    # an admin: keys for members and admins, not for owners (that would hand them an owner's powers)
    assert create_key(client, org, admin, member_id)["member"]["id"] == member_id
    refused = client.post(keys_url(org), json={"member_id": owner_id}, headers=admin)
    assert refused.status_code == 403 and "owners" in refused.get_json()["error"]["message"]
    everyone = client.get(keys_url(org), headers=admin).get_json()["data"]
    assert {key["member"]["id"] for key in everyone} == {owner_id, admin_id, member_id}
    members_key = key_id_of(app, member["Authorization"].split()[1])
    assert client.delete(keys_url(org, members_key), headers=admin).status_code == 204
    assert client.get("/v1/orgs", headers=member).status_code == 401

    # an owner: keys for anyone, owners included
    second_owner = add_member(client, org, owner, "owner2@example.com", "owner")
    assert create_key(client, org, owner, second_owner)["member"]["id"] == second_owner
    assert create_key(client, org, owner, admin_id)["member"]["id"] == admin_id

    # someone who is not a member, and a malformed body
    stranger = client.post(keys_url(org), json={"member_id": "usr_nobody"}, headers=owner)
    assert stranger.status_code == 404 and stranger.get_json()["error"]["code"] == "NOT_FOUND"
    unknown = client.post(keys_url(org), json={"member": member_id}, headers=owner)
    assert unknown.status_code == 422 and unknown.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_revoked_key_is_refused_at_once_by_every_process(make_app, new_org):
    """Two app instances (two API processes) caching lookups for an hour: a key revoked through one is a
    401 at the other's next request, not after the cache window (api.auth's generation in Redis)."""
    here, there = make_app(auth_cache_seconds=3600), make_app(auth_cache_seconds=3600)
    client, elsewhere = here.test_client(), there.test_client()
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    spare = create_key(client, org, owner)
    assert elsewhere.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 200  # cached there
    assert client.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 200  # and here
    assert client.delete(keys_url(org, spare["id"]), headers=owner).status_code == 204
    refused = elsewhere.get("/v1/orgs", headers=bearer(spare["key"]))
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert client.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 401
    assert elsewhere.get("/v1/orgs", headers=owner).status_code == 200  # the other key still works
    listed = {key["id"]: key for key in client.get(keys_url(org), headers=owner).get_json()["data"]}
    assert listed[spare["id"]]["revoked_at"] is not None

    # revoking the key you call with: done, and that key's next request is a 401
    third = create_key(client, org, owner)
    assert client.delete(keys_url(org, third["id"]), headers=bearer(third["key"])).status_code == 204
    assert elsewhere.get("/v1/orgs", headers=bearer(third["key"])).status_code == 401


def test_revoking_again_tells_the_processes_again(make_app, new_org):
    """A revocation whose announcement was lost (Redis down after the UPDATE: a 503) is completed by
    sending the DELETE again: 204, and a process still holding the key in its cache refuses it."""
    here, there = make_app(auth_cache_seconds=3600), make_app(auth_cache_seconds=3600)
    client, elsewhere = here.test_client(), there.test_client()
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    spare = create_key(client, org, owner)
    assert elsewhere.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 200  # cached there
    with here.app_context():  # revoked in the database, the processes never told
        ApiKey.update(revoked_at=utcnow()).where(ApiKey.public_id == spare["id"]).execute()
    assert elsewhere.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 200  # still cached
    assert client.delete(keys_url(org, spare["id"]), headers=owner).status_code == 204
    assert elsewhere.get("/v1/orgs", headers=bearer(spare["key"])).status_code == 401


def test_another_organizations_keys_and_members_are_not_found(app, client, new_org):
    org_a, owner_a = new_org("enterprise", custom_rate_limit=100_000)
    org_b, owner_b = new_org("enterprise", custom_rate_limit=100_000)
    raw_a = owner_a["Authorization"].split()[1]
    key_a = key_id_of(app, raw_a)
    user_a = client.get(keys_url(org_a), headers=owner_a).get_json()["data"][0]["member"]["id"]
    answers = [
        client.get(keys_url(org_a), headers=owner_b),
        client.post(keys_url(org_a), json={}, headers=owner_b),
        client.delete(keys_url(org_a, key_a), headers=owner_b),
        client.delete(keys_url(org_b, key_a), headers=owner_b),  # A's key under B's own organization
        client.post(keys_url(org_b), json={"member_id": user_a}, headers=owner_b),  # A's owner
        client.delete(keys_url(org_b, "key_doesnotexist"), headers=owner_b),
    ]
    for answer in answers:
        assert answer.status_code == 404, answer.get_json()
        assert answer.get_json()["error"]["code"] == "NOT_FOUND"
        text = answer.get_data(as_text=True)
        assert raw_a[:11] not in text and "@example.com" not in text
    assert client.get("/v1/orgs", headers=owner_a).status_code == 200  # A's key untouched
    with app.app_context():
        assert ApiKey.select().where(ApiKey.revoked_at.is_null(False)).count() == 0
        assert ApiKey.select().count() == 2  # nobody got a key in A, nor a key of A's owner in B


def test_the_last_owner_key_is_kept(app, client, new_org):
    """An organization cannot lock itself out: the last active key held by an owner is refused (409),
    whoever revokes it; keys of admins and members and owners without keys do not count."""
    org, team = new_team(client, new_org)
    (_, owner), (_, admin) = team["owner"], team["admin"]
    add_member(client, org, owner, "keyless-owner@example.com", "owner")
    first = key_id_of(app, owner["Authorization"].split()[1])
    for who in (owner, admin):
        refused = client.delete(keys_url(org, first), headers=who)
        assert refused.status_code == 409, refused.get_json()
        assert refused.get_json()["error"]["code"] == "CONFLICT"
        assert refused.get_json()["error"]["details"] == {"key_id": first}
    assert client.get("/v1/orgs", headers=owner).status_code == 200  # still works

    second = create_key(client, org, owner)
    assert client.delete(keys_url(org, first), headers=owner).status_code == 204  # a rotation
    assert client.get("/v1/orgs", headers=owner).status_code == 401
    last = client.delete(keys_url(org, second["id"]), headers=bearer(second["key"]))
    assert last.status_code == 409 and last.get_json()["error"]["code"] == "CONFLICT"
    assert client.get("/v1/orgs", headers=bearer(second["key"])).status_code == 200


def test_two_revocations_at_once_keep_one_owner_key(app, make_app, new_org, monkeypatch):
    """Two API processes revoke the organization's two owner keys at the same moment. The second waits
    for the first's transaction (the organization's row lock), then finds its key the last: 409.
    Unlocked, both counted two owner keys and the organization was left with none."""
    other = make_app()
    client = app.test_client()
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    first = key_id_of(app, owner["Authorization"].split()[1])
    second = create_key(client, org, owner)
    checking = threading.Event()
    real_check = key_service._is_last_owner_key

    def slow_check(org, key) -> bool:  # the first revocation has checked and pauses before writing
        last = real_check(org, key)
        if threading.current_thread().name == "first":
            checking.set()
            threading.Event().wait(PAUSE)
        return last

    monkeypatch.setattr(key_service, "_is_last_owner_key", slow_check)
    answers: dict[str, object] = {}

    def revoke(name: str, test_client, key_id: str, headers: dict[str, str]) -> None:
        if name == "second":
            assert checking.wait(10)
        answers[name] = test_client.delete(keys_url(org, key_id), headers=headers)

    # each owner key revokes itself: the second's caller is not the key the first revokes
    calls = [("first", app.test_client(), first, owner)]
    calls.append(("second", other.test_client(), second["id"], bearer(second["key"])))
    threads = [threading.Thread(target=revoke, args=call, name=call[0]) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [answers[name].status_code for name in ("first", "second")] == [204, 409]
    with app.app_context():
        assert ApiKey.get(ApiKey.public_id == second["id"]).revoked_at is None


def test_a_member_holds_at_most_the_cap_of_active_keys(app, client, new_org):
    """A key can mint keys, a leaked one too: without a cap one key filled the table at the rate limit."""
    org, team = new_team(client, new_org)
    member_id, member = team["member"]
    for _ in range(key_service.MAX_ACTIVE_KEYS - 1):  # the one new_team made, then up to the cap
        create_key(client, org, member)
    refused = client.post(keys_url(org), headers=member)
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["details"] == {
        "member_id": member_id,
        "active_keys": key_service.MAX_ACTIVE_KEYS,
    }
    mine = client.get(keys_url(org), headers=member).get_json()["data"]
    assert len(mine) == key_service.MAX_ACTIVE_KEYS
    assert client.delete(keys_url(org, mine[-1]["id"]), headers=member).status_code == 204
    assert client.post(keys_url(org), headers=member).status_code == 201


def test_the_list_comes_in_pages_and_a_member_pages_through_their_own_keys_only(app, client, new_org):
    """Revoked keys stay listed, so an organization that rotates keys grows its list for good: one
    answer held them all."""
    org, team = new_team(client, new_org)
    (_, owner), (member_id, member) = team["owner"], team["member"]
    for _ in range(4):
        create_key(client, org, member)
        create_key(client, org, owner)  # interleaved: the member's pages skip these
    everyone = client.get(keys_url(org), headers=owner).get_json()
    assert everyone["has_more"] is False and len(everyone["data"]) == 11

    def pages(headers, limit):
        seen, after = [], None
        while True:
            query = {"limit": limit} | ({"starting_after": after} if after else {})
            page = client.get(keys_url(org), query_string=query, headers=headers)
            assert page.status_code == 200, page.get_json()
            body = page.get_json()
            assert len(body["data"]) <= limit
            seen += [key["id"] for key in body["data"]]
            if not body["has_more"]:
                return seen
            after = seen[-1]

    assert pages(owner, 3) == [key["id"] for key in everyone["data"]]
    mine = [key["id"] for key in everyone["data"] if key["member"]["id"] == member_id]
    assert pages(member, 2) == mine and len(mine) == 5

    # a cursor a member cannot list, one that is no key, and limits out of range: 422 in the envelope
    owners_first = everyone["data"][0]["id"]
    for query in (
        {"starting_after": owners_first},
        {"starting_after": "key_nope"},
        {"limit": 0},
        {"limit": 101},
    ):
        refused = client.get(keys_url(org), query_string=query, headers=member)
        assert refused.status_code == 422, (query, refused.get_json())
        assert refused.get_json()["error"]["code"] == "VALIDATION_ERROR"
    unknown = client.get(keys_url(org), query_string={"page": 2}, headers=owner)
    assert unknown.status_code == 422 and unknown.get_json()["error"]["code"] == "VALIDATION_ERROR"
