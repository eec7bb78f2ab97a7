"""Migration 007: users stored before emails were NFKC-normalized get the normalized form, and one
person stored twice (fullwidth and ASCII) becomes one user, keeping every membership and key."""

from __future__ import annotations

from api.db import db, make_database
from api.migrations import router, upgrade
from api.models import ApiKey, Membership, Organization, User

FULLWIDTH_BOB = "ｂｏｂ@ａｃｍｅ.ｔｅｓｔ"


def _key(membership: Membership, n: int) -> ApiKey:
    return ApiKey.create(membership=membership, key_hash=f"{n:064x}", prefix=f"ct_{n}")


def test_old_emails_are_normalized_and_duplicates_merged(database_url):
    database = make_database(database_url)
    db.initialize(database)
    with database.connection_context():
        router(database).run("006_list_and_sweep_indexes")  # the schema as it was before 007
        acme, beta = Organization.create(name="acme"), Organization.create(name="beta")
        ascii_bob = User.create(email="bob@acme.test")
        wide_bob = User.create(email=FULLWIDTH_BOB)
        wide_carol = User.create(email="ｃａｒｏｌ@ｘ.ｔｅｓｔ")
        plain = User.create(email="dave@x.test")
        bob_acme = Membership.create(organization=acme, user=ascii_bob, role="member")
        wide_acme = Membership.create(organization=acme, user=wide_bob, role="owner")
        wide_beta = Membership.create(organization=beta, user=wide_bob, role="admin")
        carol_beta = Membership.create(organization=beta, user=wide_carol, role="member")
        keys = [_key(bob_acme, 1), _key(wide_acme, 2), _key(wide_beta, 3), _key(carol_beta, 4)]

    assert upgrade(database) == ["007_normalize_member_emails"]

    with database.connection_context():
        assert sorted(u.email for u in User.select()) == ["bob@acme.test", "carol@x.test", "dave@x.test"]
        assert User.get_by_id(ascii_bob.id).email == "bob@acme.test"
        assert User.get_by_id(wide_carol.id).email == "carol@x.test"
        assert User.get_by_id(plain.id).email == "dave@x.test"
        bob = {m.organization.name: m for m in Membership.select().where(Membership.user == ascii_bob.id)}
        assert {name: m.role for name, m in bob.items()} == {"acme": "owner", "beta": "admin"}
        key_owner = {k.id: ApiKey.get_by_id(k.id).membership_id for k in keys}
        assert key_owner[keys[0].id] == key_owner[keys[1].id] == bob["acme"].id
        assert key_owner[keys[2].id] == bob["beta"].id
        assert key_owner[keys[3].id] == carol_beta.id
        assert Membership.select().count() == 3
    assert upgrade(database) == []
