"""An organization's members managed through the API: GET /v1/orgs/{id}/members, PATCH and DELETE
…/members/{user_id}.

Before, nothing listed, removed or re-roled a member: a person who left kept their membership, and
their keys worked until an admin found and revoked each one. Real app, real database (a SQLite file and
a PostgreSQL database of the test's own), real Redis.
"""

from __future__ import annotations

import threading

import pytest

import api.services.orgs as org_service
from api.models import ApiKey, Membership, Organization, Role

PAUSE = 0.5


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def members_url(org: Organization, user_id: str | None = None) -> str:
    return f"/v1/orgs/{org.public_id}/members" + (f"/{user_id}" if user_id else "")


def add_with_key(client, org: Organization, owner: dict[str, str], email: str, role: str):
    """Add a member through the API and create them a key: (user id, their headers)."""
    added = client.post(members_url(org), json={"email": email, "role": role}, headers=owner)
    assert added.status_code == 201, added.get_json()
    user_id = added.get_json()["id"]
    created = client.post(f"/v1/orgs/{org.public_id}/keys", json={"member_id": user_id}, headers=owner)
    assert created.status_code == 201, created.get_json()
    return user_id, bearer(created.get_json()["key"])


def new_team(client, new_org, *roles: str, domain: str = "example.com"):
    """An enterprise organization with its owner and one member per role in `roles` (emails
    `<role><n>@<domain>`: a user is one person across organizations), each with a key:
    (org, [(user id, headers), …]), the owner first."""
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    owner_id = client.get(members_url(org), headers=owner).get_json()["data"][0]["id"]
    team = [(owner_id, owner)]
    for n, role in enumerate(roles):
        team.append(add_with_key(client, org, owner, f"{role}{n}@{domain}", role))
    return org, team


def roles_of(client, org: Organization, headers: dict[str, str]) -> dict[str, str]:
    listed = client.get(members_url(org), headers=headers)
    assert listed.status_code == 200, listed.get_json()
    return {member["id"]: member["role"] for member in listed.get_json()["data"]}


def assert_error(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == code
    return error


def test_any_member_lists_the_members_in_pages(client, new_org):
    org, team = new_team(client, new_org, "admin", "member", "member", "member", "member")
    (owner_id, owner), (admin_id, _), (member_id, member) = team[:3]
    everyone = client.get(members_url(org), headers=member)  # a plain member lists them too
    assert everyone.status_code == 200, everyone.get_json()
    body = everyone.get_json()
    assert body["has_more"] is False and len(body["data"]) == 6
    first = body["data"][0]
    assert set(first) == {"id", "email", "role", "created_at"} and first["created_at"].endswith("Z")
    assert [m["id"] for m in body["data"]][:3] == [owner_id, admin_id, member_id]
    assert [m["role"] for m in body["data"]][:3] == ["owner", "admin", "member"]
    assert body["data"][2]["email"] == "member1@example.com"

    def pages(limit: int, after: str | None = None) -> list[str]:
        seen = []
        while True:
            query = {"limit": limit} | ({"starting_after": after} if after else {})
            page = client.get(members_url(org), query_string=query, headers=owner)
            assert page.status_code == 200, page.get_json()
            data = page.get_json()
            assert len(data["data"]) <= limit
            seen += [m["id"] for m in data["data"]]
            if not data["has_more"]:
                return seen
            after = seen[-1]

    ids = [m["id"] for m in body["data"]]
    assert pages(2) == pages(1) == pages(100) == ids

    # a member removed between two pages: the next page still goes on from them
    page = client.get(members_url(org), query_string={"limit": 3}, headers=owner).get_json()
    assert page["has_more"] is True
    last = page["data"][-1]["id"]
    assert client.delete(members_url(org, last), headers=owner).status_code == 204
    rest = client.get(members_url(org), query_string={"starting_after": last}, headers=owner).get_json()
    assert [m["id"] for m in rest["data"]] == ids[3:] and rest["has_more"] is False

    for query in ({"starting_after": "usr_doesnotexist"}, {"limit": 0}, {"limit": 101}, {"page": 2}):
        assert_error(client.get(members_url(org), query_string=query, headers=owner), 422, "VALIDATION_ERROR")


def test_who_may_remove_whom(app, client, new_org):
    org, team = new_team(client, new_org, "owner", "admin", "admin", "member", "member")
    (owner_id, owner), (owner2_id, _), (admin_id, admin), (admin2_id, _) = team[:4]
    (member_id, member), (member2_id, member2) = team[4:]

    assert_error(client.delete(members_url(org, member2_id), headers=member), 403, "FORBIDDEN")
    assert_error(client.delete(members_url(org, admin_id), headers=member), 403, "FORBIDDEN")
    assert_error(client.delete(members_url(org, owner2_id), headers=admin), 403, "FORBIDDEN")  # an owner
    assert_error(client.delete(members_url(org, owner_id), headers=admin), 403, "FORBIDDEN")
    assert len(roles_of(client, org, owner)) == 6  # nobody removed

    assert client.delete(members_url(org, member2_id), headers=admin).status_code == 204
    assert client.delete(members_url(org, admin2_id), headers=admin).status_code == 204
    assert client.delete(members_url(org, member_id), headers=member).status_code == 204  # leaves
    assert client.delete(members_url(org, owner2_id), headers=owner).status_code == 204
    assert roles_of(client, org, owner) == {owner_id: "owner", admin_id: "admin"}
    assert_error(client.delete(members_url(org, member_id), headers=owner), 404, "NOT_FOUND")  # gone
    assert client.delete(members_url(org, admin_id), headers=admin).status_code == 204  # an admin leaves
    assert roles_of(client, org, owner) == {owner_id: "owner"}
    with app.app_context():
        assert Membership.select().where(Membership.organization == org.id).count() == 1


def test_who_may_change_roles(client, new_org):
    org, team = new_team(client, new_org, "owner", "admin", "member", "member")
    (owner_id, owner), (owner2_id, _), (admin_id, admin), (member_id, member), (member2_id, _) = team

    def patch(user_id: str, role, headers):
        return client.patch(members_url(org, user_id), json={"role": role}, headers=headers)

    assert_error(patch(member2_id, "admin", member), 403, "FORBIDDEN")
    assert_error(patch(member_id, "admin", member), 403, "FORBIDDEN")  # not even themselves
    assert_error(patch(member_id, "owner", admin), 403, "FORBIDDEN")  # admins make no owners
    assert_error(patch(owner2_id, "admin", admin), 403, "FORBIDDEN")  # nor touch one
    assert_error(patch(owner2_id, "owner", admin), 403, "FORBIDDEN")
    assert_error(patch(member_id, "boss", owner), 422, "VALIDATION_ERROR")
    assert_error(patch(member_id, None, owner), 422, "VALIDATION_ERROR")
    extra = client.patch(members_url(org, member_id), json={"role": "admin", "x": 1}, headers=owner)
    assert_error(extra, 422, "VALIDATION_ERROR")
    assert_error(client.patch(members_url(org, member_id), json={}, headers=owner), 422, "VALIDATION_ERROR")
    assert roles_of(client, org, owner)[member_id] == "member"

    promoted = patch(member_id, "admin", admin)
    assert promoted.status_code == 200, promoted.get_json()
    assert promoted.get_json()["id"] == member_id and promoted.get_json()["role"] == "admin"
    assert promoted.get_json()["email"] == "member2@example.com"
    assert patch(member_id, "admin", admin).status_code == 200  # the same role again
    assert patch(member2_id, "owner", owner).get_json()["role"] == "owner"
    assert patch(owner2_id, "member", owner).get_json()["role"] == "member"
    assert patch(admin_id, "member", admin).get_json()["role"] == "member"  # an admin steps down
    assert roles_of(client, org, owner) == {
        owner_id: "owner",
        owner2_id: "member",
        admin_id: "member",
        member_id: "admin",
        member2_id: "owner",
    }
    # the new role counts at once, for keys already cached too
    assert_error(patch(owner2_id, "admin", admin), 403, "FORBIDDEN")  # admin is a member now
    assert patch(owner2_id, "admin", member).status_code == 200  # and the member an admin


def test_the_last_owner_is_neither_removed_nor_demoted(client, new_org):
    org, team = new_team(client, new_org, "owner", "admin")
    (owner_id, owner), (owner2_id, owner2), (admin_id, _) = team
    assert client.delete(members_url(org, owner2_id), headers=owner).status_code == 204
    assert_error(client.get(members_url(org), headers=owner2), 401, "UNAUTHORIZED")
    for answer in (
        client.delete(members_url(org, owner_id), headers=owner),
        client.patch(members_url(org, owner_id), json={"role": "admin"}, headers=owner),
        client.patch(members_url(org, owner_id), json={"role": "member"}, headers=owner),
    ):
        error = assert_error(answer, 409, "CONFLICT")
        assert error["details"] == {"user_id": owner_id}
    assert client.patch(members_url(org, owner_id), json={"role": "owner"}, headers=owner).status_code == 200
    assert roles_of(client, org, owner) == {owner_id: "owner", admin_id: "admin"}

    # with a second owner, the first may leave: the second is then the last
    client.patch(members_url(org, admin_id), json={"role": "owner"}, headers=owner)
    assert client.patch(members_url(org, owner_id), json={"role": "member"}, headers=owner).status_code == 200
    assert_error(client.delete(members_url(org, admin_id), headers=owner), 403, "FORBIDDEN")  # a member now
    assert client.delete(members_url(org, owner_id), headers=owner).status_code == 204
    assert_error(client.get(members_url(org), headers=owner), 401, "UNAUTHORIZED")  # left, key gone too


def test_another_organizations_ids_are_not_found(app, client, new_org):
    org_a, team_a = new_team(client, new_org, "member", domain="a.example.com")
    org_b, team_b = new_team(client, new_org, "member", domain="b.example.com")
    (owner_a_id, owner_a), (member_a_id, _) = team_a
    (_, owner_b), (member_b_id, _) = team_b
    answers = [
        client.get(members_url(org_a), headers=owner_b),
        client.delete(members_url(org_a, member_a_id), headers=owner_b),
        client.patch(members_url(org_a, member_a_id), json={"role": "admin"}, headers=owner_b),
        client.delete(members_url(org_b, member_a_id), headers=owner_b),  # A's member under B
        client.patch(members_url(org_b, owner_a_id), json={"role": "member"}, headers=owner_b),
        client.delete(members_url(org_b, "usr_doesnotexist"), headers=owner_b),
        client.patch(members_url(org_b, "usr_doesnotexist"), json={"role": "admin"}, headers=owner_b),
        client.delete(f"/v1/orgs/org_doesnotexist/members/{member_b_id}", headers=owner_b),
    ]
    for answer in answers:
        assert_error(answer, 404, "NOT_FOUND")
        assert "example.com" not in answer.get_data(as_text=True)
    assert roles_of(client, org_a, owner_a) == {owner_a_id: "owner", member_a_id: "member"}
    with app.app_context():
        assert ApiKey.select().count() == 4 and Membership.select().count() == 4


def test_a_removed_members_keys_are_refused_at_once_by_every_process(make_app, new_org):
    """Two app instances (two API processes) caching key lookups for an hour: the removed member's keys
    are a 401 at the other's next request, and gone from the key list; the others' keys still work."""
    here, there = make_app(auth_cache_seconds=3600), make_app(auth_cache_seconds=3600)
    client, elsewhere = here.test_client(), there.test_client()
    org, team = new_team(client, new_org, "admin", "member")
    (_, owner), (admin_id, admin), (member_id, member) = team
    spare = client.post(f"/v1/orgs/{org.public_id}/keys", headers=member).get_json()
    member_keys = [member, bearer(spare["key"])]
    for headers in [*member_keys, admin, owner]:  # cached in both processes
        assert elsewhere.get("/v1/orgs", headers=headers).status_code == 200
        assert client.get("/v1/orgs", headers=headers).status_code == 200

    assert client.delete(members_url(org, member_id), headers=admin).status_code == 204
    for headers in member_keys:
        assert_error(elsewhere.get("/v1/orgs", headers=headers), 401, "UNAUTHORIZED")
        assert_error(client.get(members_url(org), headers=headers), 401, "UNAUTHORIZED")
    for headers in (admin, owner):
        assert elsewhere.get("/v1/orgs", headers=headers).status_code == 200
    listed = client.get(f"/v1/orgs/{org.public_id}/keys", headers=owner).get_json()["data"]
    assert member_id not in {key["member"]["id"] for key in listed} and len(listed) == 2

    # removing yourself: the key you call with is refused from its next request, everywhere
    assert client.delete(members_url(org, admin_id), headers=admin).status_code == 204
    assert_error(elsewhere.get("/v1/orgs", headers=admin), 401, "UNAUTHORIZED")
    assert_error(client.get("/v1/orgs", headers=admin), 401, "UNAUTHORIZED")

    # added again later, they start with no key: the old ones stay refused
    added = client.post(members_url(org), json={"email": "member1@example.com"}, headers=owner)
    assert added.status_code == 201 and added.get_json()["id"] == member_id
    for headers in member_keys:
        assert_error(elsewhere.get("/v1/orgs", headers=headers), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("second", ["remove", "demote"])
def test_the_last_two_owners_leaving_at_once_leave_one(app, make_app, new_org, monkeypatch, second):
    """Two API processes: both owners remove themselves (or one leaves while the other steps down) at the
    same moment. The second waits for the first's transaction (the organization's row lock), then
    finds itself the last owner: 409. Unlocked, both counted two owners and none was left."""
    other = make_app()
    client = app.test_client()
    org, team = new_team(client, new_org, "owner")
    (first_id, first), (second_id, second_headers) = team
    checking = threading.Event()
    real_count = org_service._owner_count

    def slow_count(org) -> int:  # the first has counted the owners and pauses before writing
        count = real_count(org)
        if threading.current_thread().name == "first":
            checking.set()
            threading.Event().wait(PAUSE)
        return count

    monkeypatch.setattr(org_service, "_owner_count", slow_count)
    answers: dict[str, object] = {}

    def first_leaves() -> None:
        answers["first"] = app.test_client().delete(members_url(org, first_id), headers=first)

    def second_goes() -> None:
        assert checking.wait(10)
        url, test_client = members_url(org, second_id), other.test_client()
        if second == "remove":
            answers["second"] = test_client.delete(url, headers=second_headers)
        else:
            answers["second"] = test_client.patch(url, json={"role": "admin"}, headers=second_headers)

    threads = [threading.Thread(target=first_leaves, name="first"), threading.Thread(target=second_goes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [answers[name].status_code for name in ("first", "second")] == [204, 409]
    with app.app_context():
        owners = Membership.select().where(
            (Membership.organization == org.id) & (Membership.role == Role.OWNER)
        )
        assert [m.user.public_id for m in owners] == [second_id]
    assert client.get(members_url(org), headers=second_headers).status_code == 200


def test_an_owner_holding_every_owner_key_is_neither_removed_nor_demoted(client, new_org):
    """Revoking the organization's last owner key is refused (409), but demoting or removing the owner who
    held it left the organization with no key that manages owners: the other owner, keyless, could not
    get one from anyone in the organization."""
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    owner_id = client.get(members_url(org), headers=owner).get_json()["data"][0]["id"]
    added = client.post(
        members_url(org), json={"email": "second@example.com", "role": "owner"}, headers=owner
    )
    second_id = added.get_json()["id"]  # an owner without a key
    for answer in (
        client.patch(members_url(org, owner_id), json={"role": "admin"}, headers=owner),
        client.delete(members_url(org, owner_id), headers=owner),
    ):
        error = assert_error(answer, 409, "CONFLICT")
        assert error["details"] == {"user_id": owner_id} and "another owner" in error["message"]
    assert roles_of(client, org, owner)[owner_id] == Role.OWNER
    # once the other owner has a key, the first may step down and leave
    made = client.post(f"/v1/orgs/{org.public_id}/keys", json={"member_id": second_id}, headers=owner)
    assert made.status_code == 201, made.get_json()
    second = bearer(made.get_json()["key"])
    assert client.patch(members_url(org, owner_id), json={"role": "admin"}, headers=owner).status_code == 200
    assert client.delete(members_url(org, owner_id), headers=second).status_code == 204
    assert roles_of(client, org, second) == {second_id: Role.OWNER}
