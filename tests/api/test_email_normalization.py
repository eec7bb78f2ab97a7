"""One rule for emails (api.services.orgs.normalize_email): a fullwidth address is the ASCII one.

The email validator accepts "ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ"; stored only trimmed and lower-cased, it was a
second user beside "user@example.com", so one person could be added twice to an organization.
"""

from __future__ import annotations

from api.models import User

FULLWIDTH = "ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ"


def test_the_fullwidth_form_of_a_member_is_already_a_member(client, new_org, app):
    org, owner = new_org("pro")
    url = f"/v1/orgs/{org.public_id}/members"
    added = client.post(url, json={"email": "user@example.com"}, headers=owner)
    assert added.status_code == 201

    again = client.post(url, json={"email": FULLWIDTH}, headers=owner)
    assert again.status_code == 409, again.get_json()
    error = again.get_json()["error"]
    assert error["code"] == "CONFLICT" and "already a member" in error["message"]
    assert client.get(f"/v1/orgs/{org.public_id}", headers=owner).get_json()["member_count"] == 2
    with app.app_context():
        assert User.select().where(User.email == "user@example.com").count() == 1
        assert not User.select().where(User.email == FULLWIDTH.lower()).exists()


def test_the_operator_finds_a_member_by_the_fullwidth_form(client, new_org, app):
    """`keys create --email` looks the member up with the same rule the API stored them with."""
    org, owner = new_org("pro")
    added = client.post(f"/v1/orgs/{org.public_id}/members", json={"email": FULLWIDTH}, headers=owner)
    assert added.status_code == 201 and added.get_json()["email"] == "user@example.com"

    runner = app.test_cli_runner()
    issued = runner.invoke(args=["keys", "create", "--org", org.public_id, "--email", FULLWIDTH])
    assert issued.exit_code == 0, issued.output
    member = {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}
    assert client.get(f"/v1/orgs/{org.public_id}", headers=member).get_json()["role"] == "member"
