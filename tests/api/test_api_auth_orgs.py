"""API keys (hashed, revocable, last used), organizations and members, and the CLI that manages them."""

from __future__ import annotations

import re

from api.auth import hash_key
from api.models import ApiKey, Membership, Organization, User, db


def test_keys_are_stored_only_hashed(app, client, new_org):
    _, headers = new_org("pro")
    raw = headers["Authorization"].split()[1]
    assert client.get("/v1/orgs", headers=headers).status_code == 200
    with app.app_context():
        key = ApiKey.get()
        assert key.key_hash == hash_key(raw) and len(key.key_hash) == 64
        assert raw.startswith(key.prefix) and len(key.prefix) < len(raw) // 3
        assert key.last_used_at is not None
        # nowhere in the database is the raw key
        for model in (ApiKey, Membership, Organization, User):
            for row in model.select().dicts():
                assert raw not in repr(row)


def test_every_auth_failure_is_the_same_401(app, client, new_org):
    _, headers = new_org("pro")
    raw = headers["Authorization"].split()[1]
    bodies = []
    for value in (
        None,
        "",
        "Basic abc",
        "Bearer",
        f"Bearer {raw}x",
        f"Bearer {raw[:-1]}",
        "Bearer ct_" + "a" * 43,
    ):
        response = client.get(
            "/v1/transcriptions", headers={"Authorization": value} if value is not None else {}
        )
        assert response.status_code == 401, value
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.append(response.get_json())
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["error"] == {
        "code": "UNAUTHORIZED",
        "message": "A valid API key is required",
        "details": {},
    }


def test_revocation_via_cli(app, client, new_org):
    org, headers = new_org("pro")
    runner = app.test_cli_runner()
    with app.app_context():
        owner_email = User.get().email
    result = runner.invoke(args=["keys", "create", "--org", org.public_id, "--email", owner_email])
    assert result.exit_code == 0, result.output
    second = result.stdout.strip().splitlines()[-1]
    second_headers = {"Authorization": f"Bearer {second}"}
    assert client.get("/v1/orgs", headers=second_headers).status_code == 200
    with app.app_context():
        key_id = ApiKey.get(ApiKey.key_hash == hash_key(second)).public_id
    result = runner.invoke(args=["keys", "revoke", key_id])
    assert result.exit_code == 0, result.output
    assert client.get("/v1/orgs", headers=second_headers).status_code == 401
    assert client.get("/v1/orgs", headers=headers).status_code == 200  # the other key still works
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code != 0
    stranger = runner.invoke(args=["keys", "create", "--org", org.public_id, "--email", "x@y.z"])
    assert stranger.exit_code != 0 and f"x@y.z is not a member of {org.public_id}" in stranger.output
    nowhere = runner.invoke(args=["keys", "create", "--org", "org_nope", "--email", owner_email])
    assert nowhere.exit_code != 0 and "no organization org_nope" in nowhere.output
    listed = runner.invoke(args=["keys", "list", "--org", org.public_id])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 2 and all(owner_email in line for line in lines)
    assert lines[1].startswith(key_id) and "  revoked 20" in lines[1]
    assert lines[0].endswith("active") and "used 20" in lines[0]  # the first key made requests
    assert second not in listed.output  # ids and prefixes only, never a key
    assert runner.invoke(args=["keys", "list", "--org", "org_nope"]).exit_code != 0


def test_orgs_create_and_dev_key_cli(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["orgs", "create", "Acme", "--plan", "pro", "--owner", "Boss@Acme.test"])
    assert result.exit_code == 0, result.output
    raw = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ct_[A-Za-z0-9_-]{43}", raw)
    orgs = client.get("/v1/orgs", headers={"Authorization": f"Bearer {raw}"}).get_json()["data"]
    assert [(o["name"], o["plan"], o["role"]) for o in orgs] == [("Acme", "pro", "owner")]

    first = runner.invoke(args=["dev-key"])
    second = runner.invoke(args=["dev-key"])
    assert first.exit_code == second.exit_code == 0
    assert first.stdout.strip() == second.stdout.strip()
    dev = {"Authorization": f"Bearer {first.stdout.strip()}"}
    assert client.get("/v1/transcriptions", headers=dev).status_code == 200
    with app.app_context():
        assert Organization.select().where(Organization.name == "Local development").count() == 1
    assert runner.invoke(args=["db", "upgrade"]).stdout.strip() == "up to date"


def test_org_details_and_members(client, new_org, app):
    org, owner = new_org("pro")
    listed = client.get("/v1/orgs", headers=owner).get_json()["data"]
    assert [o["id"] for o in listed] == [org.public_id]
    details = client.get(f"/v1/orgs/{org.public_id}", headers=owner).get_json()
    assert details["member_count"] == 1 and details["plan"] == "pro"
    assert details["limits"] == {"requests_per_minute": 60, "concurrent_uploads": 5}

    added = client.post(
        f"/v1/orgs/{org.public_id}/members",
        json={"email": "ada@example.com", "role": "member"},
        headers=owner,
    )
    assert added.status_code == 201
    assert added.get_json()["email"] == "ada@example.com" and added.get_json()["id"].startswith("usr_")
    again = client.post(f"/v1/orgs/{org.public_id}/members", json={"email": "ADA@example.com"}, headers=owner)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"
    assert client.get(f"/v1/orgs/{org.public_id}", headers=owner).get_json()["member_count"] == 2
    invalid = client.post(
        f"/v1/orgs/{org.public_id}/members", json={"email": "nope", "role": "king"}, headers=owner
    )
    assert invalid.status_code == 422
    assert set(invalid.get_json()["error"]["details"]["fields"]) == {"email", "role"}

    # a plain member may not add anyone; an admin may add members but not owners
    runner = app.test_cli_runner()
    member_key = runner.invoke(args=["keys", "create", "--org", org.public_id, "--email", "ada@example.com"])
    member = {"Authorization": f"Bearer {member_key.stdout.strip().splitlines()[-1]}"}
    forbidden = client.post(
        f"/v1/orgs/{org.public_id}/members", json={"email": "b@example.com"}, headers=member
    )
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "FORBIDDEN"
    with app.app_context():
        Membership.update(role="admin").where(Membership.role == "member").execute()
    assert (
        client.post(
            f"/v1/orgs/{org.public_id}/members", json={"email": "b@example.com"}, headers=member
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"/v1/orgs/{org.public_id}/members",
            json={"email": "c@example.com", "role": "owner"},
            headers=member,
        ).status_code
        == 403
    )


def test_enterprise_limits_shown(client, new_org):
    org, headers = new_org("enterprise", custom_rate_limit=1234, custom_concurrent_uploads=42)
    details = client.get(f"/v1/orgs/{org.public_id}", headers=headers).get_json()
    assert details["limits"] == {"requests_per_minute": 1234, "concurrent_uploads": 42}


def test_public_ids_are_random(app, new_org):
    ids = [new_org()[0].public_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"org_[A-Za-z0-9]{22}", i) for i in ids)
    with app.app_context():
        assert db.obj is not None


def test_a_key_speaks_for_its_own_organization_only(client, new_org, app):
    """Alice is a plain member of A and the owner of B. A key issued to her in A listed B, showed B and
    added owners to B with her role there: anyone holding an A key could act in B."""
    org_a, bob = new_org("pro", email="bob@example.com")
    org_b, _ = new_org("free", email="alice@example.com")
    added = client.post(
        f"/v1/orgs/{org_a.public_id}/members",
        json={"email": "alice@example.com", "role": "member"},
        headers=bob,
    )
    assert added.status_code == 201
    runner = app.test_cli_runner()
    issued = runner.invoke(args=["keys", "create", "--org", org_a.public_id, "--email", "alice@example.com"])
    alice_in_a = {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}

    listed = client.get("/v1/orgs", headers=alice_in_a).get_json()["data"]
    assert [(o["id"], o["role"]) for o in listed] == [(org_a.public_id, "member")]
    other = client.get(f"/v1/orgs/{org_b.public_id}", headers=alice_in_a)
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "NOT_FOUND"
    escalate = client.post(
        f"/v1/orgs/{org_b.public_id}/members",
        json={"email": "mallory@example.com", "role": "owner"},
        headers=alice_in_a,
    )
    assert escalate.status_code == 404
    with app.app_context():
        assert not User.select().where(User.email == "mallory@example.com").exists()


def test_an_email_that_lower_casing_lengthens_past_the_column_is_refused(client, new_org):
    """ "İ" lower-cases to two characters: 212 sent, 412 to store in a column of 320."""
    org, owner = new_org("pro")
    email = "İ" * 200 + "@example.com"
    refused = client.post(f"/v1/orgs/{org.public_id}/members", json={"email": email}, headers=owner)
    assert refused.status_code == 422
    assert set(refused.get_json()["error"]["details"]["fields"]) == {"email"}
