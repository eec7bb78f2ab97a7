"""The webhook signing secret: shown and rotated by an organization's owners and admins (API), or by the
operator (`flask --app api orgs webhook-secret`). Before, nothing showed it, so no customer could verify
a delivery. Real app, real database (a SQLite file and a PostgreSQL database of the test's own).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import api.services.orgs as org_service
from api.models import Organization, utcnow
from api.services.keys import operator_create_key
from api.services.orgs import WEBHOOK_SECRET_OVERLAP, signing_secrets

ROOT = Path(__file__).resolve().parents[2]
PAUSE = 0.5


def secret_url(org: Organization, rotate: bool = False) -> str:
    return f"/v1/orgs/{org.public_id}/webhook-secret" + ("/rotate" if rotate else "")


def stored(app, org: Organization) -> Organization:
    with app.app_context():
        return Organization.get_by_id(org.id)


def key_of(app, client, org: Organization, owner: dict[str, str], email: str, role: str) -> dict[str, str]:
    """The auth headers of a new member of `org` with `role`."""
    added = client.post(
        f"/v1/orgs/{org.public_id}/members", json={"email": email, "role": role}, headers=owner
    )
    assert added.status_code == 201, added.get_json()
    with app.app_context():
        _, raw = operator_create_key(org.public_id, email)
    return {"Authorization": f"Bearer {raw}"}


def test_the_owner_reads_the_secret_deliveries_are_signed_with(app, client, new_org):
    org, owner = new_org("pro")
    response = client.get(secret_url(org), headers=owner)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "secret": stored(app, org).webhook_secret,
        "previous_secret_valid_until": None,
    }


def test_an_admin_reads_and_rotates_a_member_may_not(app, client, new_org):
    org, owner = new_org("pro")
    admin = key_of(app, client, org, owner, "admin@example.com", "admin")
    member = key_of(app, client, org, owner, "member@example.com", "member")
    before = stored(app, org).webhook_secret

    for method, url in [("GET", secret_url(org)), ("POST", secret_url(org, rotate=True))]:
        refused = client.open(url, method=method, headers=member)
        assert refused.status_code == 403, (method, refused.get_json())
        assert refused.get_json()["error"]["code"] == "FORBIDDEN"
        assert before not in refused.get_data(as_text=True)
    assert stored(app, org).webhook_secret == before  # the member's rotation did nothing

    assert client.get(secret_url(org), headers=admin).get_json()["secret"] == before
    rotated = client.post(secret_url(org, rotate=True), headers=admin)
    assert rotated.status_code == 200
    assert rotated.get_json()["secret"] == stored(app, org).webhook_secret != before


def test_another_organizations_secret_is_not_found_and_no_key_is_401(app, client, new_org):
    org_a, _ = new_org("pro")
    _, owner_b = new_org("pro")
    secret_a = stored(app, org_a).webhook_secret
    for method, url in [("GET", secret_url(org_a)), ("POST", secret_url(org_a, rotate=True))]:
        other = client.open(url, method=method, headers=owner_b)
        assert other.status_code == 404 and other.get_json()["error"]["code"] == "NOT_FOUND"
        unknown = client.open(url.replace(org_a.public_id, "org_nope"), method=method, headers=owner_b)
        assert unknown.status_code == 404
        anonymous = client.open(url, method=method)
        assert anonymous.status_code == 401 and anonymous.get_json()["error"]["code"] == "UNAUTHORIZED"
        for answer in (other, unknown, anonymous):
            assert secret_a not in answer.get_data(as_text=True)
    assert (
        stored(app, org_a).webhook_secret == secret_a and stored(app, org_a).webhook_secret_rotated_at is None
    )


def test_a_rotation_keeps_the_old_secret_as_previous_for_the_overlap(app, client, new_org):
    org, owner = new_org("pro")
    old = stored(app, org).webhook_secret
    started = utcnow()
    response = client.post(secret_url(org, rotate=True), headers=owner)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    row = stored(app, org)
    assert body["secret"] == row.webhook_secret != old
    assert row.webhook_secret_previous == old
    assert started <= row.webhook_secret_rotated_at <= utcnow()
    until = row.webhook_secret_rotated_at + WEBHOOK_SECRET_OVERLAP
    assert body["previous_secret_valid_until"] == until.replace(microsecond=0).isoformat() + "Z"
    assert client.get(secret_url(org), headers=owner).get_json() == body
    assert signing_secrets(row) == [row.webhook_secret, old]

    # 25 h later the old one no longer signs, and the API says so
    with app.app_context():
        Organization.update(webhook_secret_rotated_at=utcnow() - dt.timedelta(hours=25)).where(
            Organization.id == org.id
        ).execute()
    later = client.get(secret_url(org), headers=owner).get_json()
    assert later == {"secret": row.webhook_secret, "previous_secret_valid_until": None}
    assert signing_secrets(stored(app, org)) == [row.webhook_secret]


def test_two_rotations_at_once_lose_no_secret(app, make_app, new_org, monkeypatch):
    """Two owners (two API processes) rotate at the same moment. The second waits for the first's
    transaction, so it keeps the first one's new secret as its previous: the one the first owner was
    just given, maybe already set in the receiver, still signs for the overlap. Unlocked, both kept the
    original as previous and the first's new secret was lost at once."""
    org, owner = new_org("pro")
    original = stored(app, org).webhook_secret
    other = make_app()
    reading = threading.Event()
    real_new_secret = org_service._new_webhook_secret

    def slow_new_secret() -> str:  # the first rotation has read the row and pauses before writing
        if threading.current_thread().name == "first":
            reading.set()
            threading.Event().wait(PAUSE)
        return real_new_secret()

    monkeypatch.setattr(org_service, "_new_webhook_secret", slow_new_secret)
    answers: dict[str, object] = {}

    def rotate(name: str, client) -> None:
        if name == "second":
            assert reading.wait(10)
        answers[name] = client.post(secret_url(org, rotate=True), headers=owner)

    threads = [
        threading.Thread(target=rotate, args=("first", app.test_client()), name="first"),
        threading.Thread(target=rotate, args=("second", other.test_client()), name="second"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    first, second = answers["first"], answers["second"]
    assert first.status_code == second.status_code == 200, (first.get_json(), second.get_json())
    row = stored(app, org)
    assert row.webhook_secret == second.get_json()["secret"]
    assert row.webhook_secret_previous == first.get_json()["secret"]
    assert len({original, row.webhook_secret, row.webhook_secret_previous}) == 3


def flask(app, *args: str) -> subprocess.CompletedProcess:
    settings = app.extensions["cliptext"].settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPTEXT_", "PROMETHEUS_"))}
    env.update(
        CLIPTEXT_DATA_DIR=str(settings.data_dir),
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        CLIPTEXT_SECRET_KEY=secrets.token_urlsafe(32),
        CLIPTEXT_LOG_FORMAT="text",
    )
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", "orgs", "webhook-secret", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_operator_prints_and_rotates_it(app, client, new_org):
    org, owner = new_org("pro")
    old = stored(app, org).webhook_secret

    shown = flask(app, org.public_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{old}\n"

    rotated = flask(app, org.public_id, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    row = stored(app, org)
    assert rotated.stdout == f"{row.webhook_secret}\n" and row.webhook_secret != old
    assert row.webhook_secret_previous == old
    assert "previous secret also signs deliveries until" in rotated.stderr
    assert client.get(secret_url(org), headers=owner).get_json()["secret"] == row.webhook_secret

    missing = flask(app, "org_nope", "--rotate")
    assert missing.returncode == 1 and "no organization org_nope" in missing.stderr
    assert missing.stdout == ""
