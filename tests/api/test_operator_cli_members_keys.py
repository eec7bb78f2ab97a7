"""The operator's `flask --app api orgs add-member` and `keys revoke` keep the API's rules.

`keys revoke` revoked an organization's last active owner key (exit 0), after which no key of it could
create owner keys (and, with no other key, every call was a 401); the API refuses that with 409. Now the
CLI refuses it too (the same rule, api.services.keys), unless --force. There was no command to add a
member: `keys create --email` for someone not yet a member failed with no hint. `orgs add-member` goes
through the same service as `POST /v1/orgs/{id}/members`. Real app, real database (SQLite file and
PostgreSQL), real Redis, Flask's CLI runner.
"""

from __future__ import annotations

import pytest

from api.auth import hash_key
from api.models import ApiKey, Membership, User
from api.services import orgs as org_service


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def key_id_of(app, raw: str) -> str:
    with app.app_context():
        return ApiKey.get(ApiKey.key_hash == hash_key(raw)).public_id


def owner_email(app, org) -> str:
    with app.app_context():
        return Membership.get(Membership.organization == org.id, Membership.role == "owner").user.email


def invoke(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def add_member(app, org, email: str, *more: str):
    return invoke(app, "orgs", "add-member", "--org", org.public_id, "--email", email, *more)


def new_key(app, org, email: str) -> dict[str, str]:
    """`keys create` for that member; the Authorization header of the key it printed."""
    issued = invoke(app, "keys", "create", "--org", org.public_id, "--email", email)
    assert issued.exit_code == 0, issued.output
    return {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}


def assert_one_line_error(result, exit_code: int, *says: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException or usage error, no traceback
    assert result.stdout == ""
    for text in says:
        assert text in result.stderr, result.stderr


# -- keys revoke: the last owner key -------------------------------------------------------------------


def test_revoking_the_last_owner_key_is_refused(app, client, new_org):
    org, owner = new_org("pro")
    key_id = key_id_of(app, bearer(owner))
    refused = invoke(app, "keys", "revoke", key_id)
    assert_one_line_error(
        refused,
        1,
        f"Error: {key_id} is the last active owner key of {org.public_id}",
        f"flask --app api keys create --org {org.public_id} --email {owner_email(app, org)}",
        "--force",
    )
    assert len(refused.stderr.strip().splitlines()) == 1
    assert client.get("/v1/orgs", headers=owner).status_code == 200  # still works
    with app.app_context():
        assert ApiKey.get(ApiKey.public_id == key_id).revoked_at is None


def test_force_revokes_the_last_owner_key_and_says_how_to_make_one(app, client, new_org):
    org, owner = new_org("pro")
    email = owner_email(app, org)
    key_id = key_id_of(app, bearer(owner))
    forced = invoke(app, "keys", "revoke", key_id, "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout == f"revoked {key_id}\n"
    assert f"{org.public_id} now has no owner key" in forced.stderr
    assert f"flask --app api keys create --org {org.public_id} --email {email}" in forced.stderr
    assert client.get("/v1/orgs", headers=owner).status_code == 401
    # what it says to run gives the owner a working key again
    assert client.get("/v1/orgs", headers=new_key(app, org, email)).status_code == 200


def test_a_second_owner_key_lets_the_plain_revoke_work(app, client, new_org):
    org, first = new_org("pro")
    second = new_key(app, org, owner_email(app, org))
    revoked = invoke(app, "keys", "revoke", key_id_of(app, bearer(first)))
    assert revoked.exit_code == 0, revoked.output
    assert "no owner key" not in revoked.output
    assert client.get("/v1/orgs", headers=first).status_code == 401
    assert client.get("/v1/orgs", headers=second).status_code == 200
    # now the second is the last one
    again = invoke(app, "keys", "revoke", key_id_of(app, bearer(second)))
    assert_one_line_error(again, 1, "last active owner key")
    assert client.get("/v1/orgs", headers=second).status_code == 200


def test_keys_of_admins_and_members_are_not_owner_keys(app, client, new_org):
    """The rule counts owners' keys only: an admin's key cannot create owner keys."""
    org, owner = new_org("pro")
    for email, role in (("ada@acme.test", "admin"), ("mo@acme.test", "member")):
        assert add_member(app, org, email, "--role", role).exit_code == 0
        new_key(app, org, email)
    refused = invoke(app, "keys", "revoke", key_id_of(app, bearer(owner)))
    assert_one_line_error(refused, 1, "last active owner key")
    assert client.get("/v1/orgs", headers=owner).status_code == 200


# -- orgs add-member -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["member", "admin", "owner"])
def test_add_member_then_keys_create_gives_them_a_working_key(app, client, new_org, role):
    org, owner = new_org("pro")
    added = add_member(app, org, " Bob@Acme.TEST ", "--role", role)
    assert added.exit_code == 0, added.output
    with app.app_context():
        user = User.get(User.email == "bob@acme.test")  # normalized as the API stores it
    assert added.stdout == f"{user.public_id}\n" and user.public_id.startswith("usr_")
    assert f"bob@acme.test to {org.public_id} as {role}" in added.stderr
    bob = new_key(app, org, "bob@acme.test")
    seen = client.get(f"/v1/orgs/{org.public_id}", headers=bob)
    assert seen.status_code == 200 and seen.get_json()["role"] == role
    assert seen.get_json()["member_count"] == 2


def test_add_member_defaults_to_member(app, client, new_org):
    org, _ = new_org("pro")
    assert add_member(app, org, "bob@acme.test").exit_code == 0
    bob = new_key(app, org, "bob@acme.test")
    assert client.get(f"/v1/orgs/{org.public_id}", headers=bob).get_json()["role"] == "member"


def test_adding_a_member_twice_is_refused(app, client, new_org):
    org, owner = new_org("pro")
    assert add_member(app, org, "bob@acme.test").exit_code == 0
    for again in ("bob@acme.test", "BOB@acme.test", "ｂｏｂ@ａｃｍｅ.ｔｅｓｔ"):  # one member, any form
        refused = add_member(app, org, again, "--role", "admin")
        assert_one_line_error(refused, 1, "Error: bob@acme.test is already a member")
    assert_one_line_error(add_member(app, org, owner_email(app, org)), 1, "is already a member")
    # the API and the CLI are one rule: the API refuses the one the CLI added
    api = client.post(f"/v1/orgs/{org.public_id}/members", json={"email": "bob@acme.test"}, headers=owner)
    assert api.status_code == 409 and api.get_json()["error"]["code"] == "CONFLICT"
    assert client.get(f"/v1/orgs/{org.public_id}", headers=owner).get_json()["member_count"] == 2


BAD = [
    (["--email", "bob@acme.test", "--role", "superuser"], "Invalid value for '--role'"),
    (["--email", "not-an-email"], "Invalid value for '--email': 'not-an-email' is not an email address"),
    (["--email", "   "], "Invalid value for '--email': must not be empty"),
    (["--email", "b" * 320 + "@acme.test"], "Invalid value for '--email': must be at most 320 characters"),
]


@pytest.mark.parametrize(("args", "says"), BAD, ids=["role", "email", "empty", "long"])
def test_add_member_refuses_a_bad_role_or_email(app, client, new_org, args, says):
    org, owner = new_org("pro")
    assert_one_line_error(invoke(app, "orgs", "add-member", "--org", org.public_id, *args), 2, says)
    assert client.get(f"/v1/orgs/{org.public_id}", headers=owner).get_json()["member_count"] == 1


def test_add_member_to_an_unknown_org_is_refused(app):
    nowhere = invoke(app, "orgs", "add-member", "--org", "org_nope", "--email", "bob@acme.test")
    assert_one_line_error(nowhere, 1, "Error: no organization org_nope")
    with app.app_context():
        assert not User.select().where(User.email == "bob@acme.test").exists()


def test_the_service_refuses_an_unknown_role(app, new_org):
    """The CLI's --role choice stops it first; the service checks it too (it is its rule)."""
    org, _ = new_org("pro")
    with app.app_context(), pytest.raises(org_service.InvalidOrg) as refused:
        org_service.operator_add_member(org.public_id, "bob@acme.test", "superuser")
    assert refused.value.field == "role"


# -- keys create for someone not a member --------------------------------------------------------------


def test_keys_create_for_a_non_member_says_how_to_add_them(app, client, new_org):
    org, _ = new_org("pro")
    stranger = invoke(app, "keys", "create", "--org", org.public_id, "--email", "bob@acme.test")
    assert_one_line_error(
        stranger,
        1,
        f"bob@acme.test is not a member of {org.public_id}; add them first: "
        f"flask --app api orgs add-member --org {org.public_id} --email bob@acme.test",
        f"(or POST /v1/orgs/{org.public_id}/members)",
    )
    nowhere = invoke(app, "keys", "create", "--org", "org_nope", "--email", "bob@acme.test")
    assert_one_line_error(nowhere, 1, "no organization org_nope")
    assert "add-member" not in nowhere.stderr  # no org to add them to
