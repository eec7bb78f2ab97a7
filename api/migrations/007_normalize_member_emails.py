"""Peewee migrations -- 007_normalize_member_emails.py.

Emails are stored NFKC-normalized, trimmed and lower-cased (api.services.orgs.normalize_email) since
this migration; before, only trimmed and lower-cased. A user stored in a form that NFKC changes
("ｂｏｂ@ａｃｍｅ.ｔｅｓｔ") could no longer be found by any email, so adding them again made a second
user. Each such user gets the normalized email; where that email is already another user's, the two
are one person and are merged into the user that has it: memberships move over, and where both were
members of one organization, the higher role stays and the API keys of both keep working.
"""

import peewee as pw
from peewee_migrate import Migrator

from api.services.orgs import normalize_email

ROLE_RANK = {"owner": 0, "admin": 1, "member": 2}  # lower ranks higher


def _tables(database: pw.Database) -> tuple[pw.Table, pw.Table, pw.Table]:
    users = pw.Table("user", ("id", "email")).bind(database)
    memberships = pw.Table("membership", ("id", "organization_id", "user_id", "role")).bind(database)
    keys = pw.Table("api_key", ("id", "membership_id")).bind(database)
    return users, memberships, keys


def _merge_user(database: pw.Database, duplicate: int, kept: int) -> None:
    """Move `duplicate`'s memberships (and their keys) to `kept`, then delete `duplicate`."""
    _, memberships, keys = _tables(database)
    theirs = {row["organization_id"]: row for row in memberships.select().where(memberships.user_id == kept)}
    for row in list(memberships.select().where(memberships.user_id == duplicate)):
        same_org = theirs.get(row["organization_id"])
        if same_org is None:
            memberships.update(user_id=kept).where(memberships.id == row["id"]).execute()
            continue
        keys.update(membership_id=same_org["id"]).where(keys.membership_id == row["id"]).execute()
        role = min(row["role"], same_org["role"], key=lambda r: ROLE_RANK.get(r, len(ROLE_RANK)))
        memberships.update(role=role).where(memberships.id == same_org["id"]).execute()
        memberships.delete().where(memberships.id == row["id"]).execute()
    users, _, _ = _tables(database)
    users.delete().where(users.id == duplicate).execute()


def normalize_emails(database: pw.Database) -> None:
    users, _, _ = _tables(database)
    owner_of: dict[str, int] = {}  # normalized email -> the user that keeps it
    rows = list(users.select(users.id, users.email).order_by(users.id))
    for row in rows:  # the emails already normalized claim theirs first
        if normalize_email(row["email"]) == row["email"]:
            owner_of[row["email"]] = row["id"]
    for row in rows:
        email = normalize_email(row["email"])
        if email == row["email"] or len(email) > 320:  # too long once normalized: left as it was
            continue
        kept = owner_of.get(email)
        if kept is None:
            users.update(email=email).where(users.id == row["id"]).execute()
            owner_of[email] = row["id"]
        else:
            _merge_user(database, row["id"], kept)


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.run(normalize_emails, database)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Nothing to undo: the old code finds normalized emails as well as it found the others."""
