"""A team administrator's review of /v1/orgs: adding members as a script or a person would.

Real app, real database (a SQLite file and a PostgreSQL database of the test's own), real Redis.
"""

from __future__ import annotations

import threading

from api.models import Membership, Organization, User

PAUSE = 0.5
TOO_LARGE = 2 * 1024 * 1024  # past the 1 MiB a JSON body may hold


def members_url(org: Organization) -> str:
    return f"/v1/orgs/{org.public_id}/members"


def _pause_first_user_insert(monkeypatch, others_done: threading.Event) -> threading.Event:
    """The thread named "first" has read (is there such a user?) and pauses before inserting it, until
    another writer is done or PAUSE has passed: where a writer committing in between broke it."""
    reading = threading.Event()
    real_create = User.create.__func__

    def create(cls, **fields):
        if threading.current_thread().name == "first":
            reading.set()
            others_done.wait(PAUSE)
        return real_create(cls, **fields)

    monkeypatch.setattr(User, "create", classmethod(create))
    return reading


def _run_both(first, second, reading: threading.Event, others_done: threading.Event) -> None:
    def run_second() -> None:
        assert reading.wait(10)
        try:
            second()
        finally:
            others_done.set()

    threads = [threading.Thread(target=first, name="first"), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_a_member_added_while_another_is_being_added_is_added(app, make_app, new_org, monkeypatch):
    """Two API processes add two new members at the same moment. On SQLite the add read in a deferred
    transaction, so the other's commit in between made its insert fail at once ("database is locked"):
    a 503 for about a quarter of the adds of a script onboarding a team in parallel."""
    org, owner = new_org("enterprise", custom_rate_limit=100_000)
    other = make_app()
    done = threading.Event()
    reading = _pause_first_user_insert(monkeypatch, done)
    answers: dict[str, object] = {}

    def add(name: str, client) -> None:
        answers[name] = client.post(members_url(org), json={"email": f"{name}@acme.test"}, headers=owner)

    _run_both(
        lambda: add("first", app.test_client()), lambda: add("second", other.test_client()), reading, done
    )
    assert {name: answer.status_code for name, answer in answers.items()} == {"first": 201, "second": 201}
    with app.app_context():
        assert Membership.select().where(Membership.organization == org.id).count() == 3


def test_an_email_pasted_with_spaces_or_in_fullwidth_is_the_one_member(client, new_org):
    """The service stores emails trimmed and NFKC-normalized, and the operator's `orgs add-member`
    took " bob@acme.test\\n"; the API refused it (and "ｂｏｂ＠ａｃｍｅ.ｔｅｓｔ") as "Not a valid email
    address"."""
    org, owner = new_org("pro")
    added = client.post(members_url(org), json={"email": " Bob@Acme.test\n"}, headers=owner)
    assert added.status_code == 201, added.get_json()
    assert added.get_json()["email"] == "bob@acme.test"
    again = client.post(members_url(org), json={"email": "ｂｏｂ＠ａｃｍｅ.ｔｅｓｔ\u00a0"}, headers=owner)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"
    assert again.get_json()["error"]["details"] == {"email": "bob@acme.test"}
    for not_an_email in (" ", "bob @acme.test", "bob\u200b@acme.test"):
        refused = client.post(members_url(org), json={"email": not_an_email}, headers=owner)
        assert refused.status_code == 422, not_an_email
        assert set(refused.get_json()["error"]["details"]["fields"]) == {"email"}


def test_the_document_promises_what_adding_a_member_answers(client, new_org):
    """A body past 1 MiB is a 413 PAYLOAD_TOO_LARGE, which the document did not list for this POST (every
    other JSON POST lists it); the roles answered are documented as the three there are."""
    org, owner = new_org("pro")
    huge = client.post(members_url(org), json={"email": "a" * TOO_LARGE + "@acme.test"}, headers=owner)
    assert huge.status_code == 413 and huge.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    doc = client.get("/v1/openapi.json").get_json()
    assert "413" in doc["paths"]["/v1/orgs/{org_id}/members"]["post"]["responses"]
    schemas = doc["components"]["schemas"]
    for schema in ("Member", "Organization"):
        assert schemas[schema]["properties"]["role"]["enum"] == ["owner", "admin", "member"]
