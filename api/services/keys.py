"""API keys: issued, listed and revoked by an organization's own members (API) or by the operator (CLI).

Who may do what (API):
- a member creates, lists and revokes their own keys only;
- owners and admins list and revoke every key of the organization, and create keys for its members;
  a key for an owner is created by an owner only (an admin handed an owner's key would act as an owner,
  which `add_member` already refuses them);
- the last active key held by an owner is not revoked (409): only an owner's key can create owner
  keys, so without one the organization could no longer manage its owners without the operator. The
  operator's `flask --app api keys revoke` is held to the same rule (operator_revoke_key) unless it
  passes --force (the operator can always issue an owner a new key).

A member removed from the organization (api.services.orgs.remove_member) loses every key of theirs
there in the same transaction (delete_member_keys).

A revocation is seen by every API process from its next request (api.auth: the auth generation in
Redis, and this process's cache dropped at once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.auth import announce_revocation, issue_key
from api.db import locked, write_transaction
from api.errors import ApiError, NotFound
from api.models import ApiKey, Membership, Organization, Role, User, db, utcnow
from api.services.orgs import member_of, membership_in, normalize_email
from cliptext.errors import ErrorCode

# active keys one member may hold: a key can mint keys (a leaked one too), and the table stays bounded
MAX_ACTIVE_KEYS = 25


@dataclass(frozen=True)
class KeyMember:
    """Whose key it is: the user's id (usr_…) and email."""

    id: str
    email: str


@dataclass(frozen=True)
class KeyView:
    """A key as listed: never its hash, never the key itself."""

    public_id: str
    prefix: str
    member: KeyMember
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class IssuedKey(KeyView):
    """A key just created, with the raw key: shown this once, stored only hashed."""

    key: str


def _fields(key: ApiKey, user: User) -> dict[str, Any]:
    return {
        "public_id": key.public_id,
        "prefix": key.prefix,
        "member": KeyMember(user.public_id, user.email),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


def _keys_of(org: Organization):
    """The organization's keys with their member's user (one query), oldest first."""
    return (
        ApiKey.select(ApiKey, Membership, User)
        .join(Membership)
        .join(User)
        .where(Membership.organization == org)
        .order_by(ApiKey.created_at, ApiKey.id)
    )


@dataclass(frozen=True)
class KeyPage:
    data: list[KeyView]
    has_more: bool


def list_keys(
    actor: Membership, org_public_id: str, limit: int = 100, starting_after: str | None = None
) -> KeyPage:
    """The organization's keys (revoked ones too) for owners and admins, a member's own for a member;
    oldest first, `limit` at a time. Revoked keys stay listed, so a page runs on from its `starting_after`
    key; a removed member's keys are deleted with their membership, and a cursor naming one is a 422."""
    mine = membership_in(actor, org_public_id)
    query = _keys_of(mine.organization)
    if mine.role not in Role.MANAGERS:
        query = query.where(ApiKey.membership == mine.id)
    if starting_after:
        after = query.where(ApiKey.public_id == starting_after).first()
        if after is None:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                "starting_after does not name a key you can list",
                {"field": "starting_after"},
            )
        query = query.where(
            (ApiKey.created_at > after.created_at)
            | ((ApiKey.created_at == after.created_at) & (ApiKey.id > after.id))
        )
    keys = list(query.limit(limit + 1))
    views = [KeyView(**_fields(key, key.membership.user)) for key in keys[:limit]]
    return KeyPage(data=views, has_more=len(keys) > limit)


def create_key(actor: Membership, org_public_id: str, member_public_id: str | None = None) -> IssuedKey:
    """A new key for `member_public_id` (a user's id), or for the caller when None.

    The target's membership is read again under its row lock, and the permission checks are made on
    that: a member removed meanwhile is a 404 (the key's insert broke the foreign key, a 500), one made
    an owner meanwhile gets no key from an admin (checked on the role before, it got one).
    """
    mine = membership_in(actor, org_public_id)
    if member_public_id is None:
        target_id, user = mine.id, mine.user
    else:
        found = member_of(mine.organization, member_public_id)
        target_id, user = found.id, found.user
    with write_transaction():
        # the row as it is now, locked: two creations at once, a removal or a role change wait for us
        target = locked(Membership.select().where(Membership.id == target_id)).first()
        if target is None:
            raise NotFound("Member")
        if target.id != mine.id:
            _check_may_create_for(mine, target)
        active = ApiKey.select().where((ApiKey.membership == target.id) & ApiKey.revoked_at.is_null()).count()
        if active >= MAX_ACTIVE_KEYS:
            raise ApiError(
                ErrorCode.CONFLICT,
                f"A member holds at most {MAX_ACTIVE_KEYS} active keys; revoke one first",
                {"member_id": user.public_id, "active_keys": active},
            )
        key, raw = issue_key(target)
    return IssuedKey(**_fields(key, user), key=raw)


def _check_may_create_for(mine: Membership, target: Membership) -> None:
    """403 unless `mine` may create a key for another member, `target` (its role as locked now)."""
    if mine.role not in Role.MANAGERS:
        raise ApiError(ErrorCode.FORBIDDEN, "Members can create keys only for themselves")
    if target.role == Role.OWNER and mine.role != Role.OWNER:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners can create keys for owners")


def revoke_key(actor: Membership, org_public_id: str, key_public_id: str) -> None:
    """Revoke a key of the organization: owners and admins any, a member their own (403 otherwise).

    Revoking a key already revoked succeeds again and tells the API processes again (a revocation
    whose Redis could not be told, a 503, is completed by retrying it). The organization's last
    active owner key is refused with 409; the check and the write hold the organization's row lock,
    so two revocations at once cannot both take one of its last two owner keys.
    """
    mine = membership_in(actor, org_public_id)
    org = mine.organization
    key = (
        ApiKey.select(ApiKey)
        .join(Membership)
        .where((ApiKey.public_id == key_public_id) & (Membership.organization == org))
        .first()
    )
    if key is None:
        raise NotFound("API key")
    if key.membership_id != mine.id and mine.role not in Role.MANAGERS:
        raise ApiError(ErrorCode.FORBIDDEN, "Members can revoke only their own keys")
    if key.revoked_at is None:
        _revoke_under_lock(org, key, refuse_last=_last_owner_conflict)
    announce_revocation()  # after the commit: a process that looks the key up again sees it revoked


def delete_member_keys(membership: Membership) -> int:
    """Every key of a member being removed from the organization, deleted in the removal's transaction
    (how many). A key row cannot outlive its membership (ApiKey.membership cascades; deleted here by
    name, whatever the database enforces), so a removed member's keys leave the list; the caller tells
    the API processes once the removal is committed (announce_revocation)."""
    return ApiKey.delete().where(ApiKey.membership == membership.id).execute()


def _active_owner_keys(org: Organization) -> list[tuple[int, int]]:
    """(key id, membership id) of every active key an owner of the organization holds."""
    query = (
        ApiKey.select(ApiKey.id, ApiKey.membership)
        .join(Membership)
        .where(
            (Membership.organization == org) & (Membership.role == Role.OWNER) & ApiKey.revoked_at.is_null()
        )
    )
    return [(key.id, key.membership_id) for key in query]


def _is_last_owner_key(org: Organization, key: ApiKey) -> bool:
    """Whether `key` is the only active key any owner of the organization holds: the rule both
    revocations (API and operator) apply, under the organization's row lock."""
    return [key_id for key_id, _ in _active_owner_keys(org)] == [key.id]


def holds_every_owner_key(org: Organization, owner: Membership) -> bool:
    """Whether `owner` holds every active owner key of the organization (at least one): removing or
    demoting them would leave no key that can manage owners, which a revocation is refused for. Asked
    under the organization's row lock (api.services.orgs)."""
    held = _active_owner_keys(org)
    return bool(held) and all(membership_id == owner.id for _, membership_id in held)


def _last_owner_conflict(key: ApiKey) -> ApiError:
    return ApiError(
        ErrorCode.CONFLICT,
        "This is the organization's last owner key; create another owner key first",
        {"key_id": key.public_id},
    )


def _revoke_under_lock(
    org: Organization, key: ApiKey, refuse_last: Callable[[ApiKey], Exception] | None
) -> tuple[bool, bool]:
    """Revoke `key` holding the organization's row lock (two revocations at once cannot both take one
    of its last two owner keys); refuse_last(key) is raised for its last active owner key, unless None.
    Returns (revoked by this call, was the last owner key): the rule both revocations apply."""
    with write_transaction():
        locked(Organization.select().where(Organization.id == org.id)).first()
        last = _is_last_owner_key(org, key)
        if last and refuse_last is not None:
            raise refuse_last(key)
        revoked = (
            ApiKey.update(revoked_at=utcnow())
            .where((ApiKey.id == key.id) & ApiKey.revoked_at.is_null())
            .execute()
        )
    return bool(revoked), last


# -- the operator's (CLI): any organization, no membership -------------------------------------------


def _require_org(org_public_id: str) -> None:
    """LookupError naming the organization when there is none with this id (the CLI prints it)."""
    if not Organization.select().where(Organization.public_id == org_public_id).exists():
        raise LookupError(f"no organization {org_public_id}")


def operator_list_keys(org_public_id: str) -> list[tuple[ApiKey, str]]:
    """(key, owner's email) of every key of an organization, oldest first; revoked ones too."""
    _require_org(org_public_id)
    keys = (
        ApiKey.select(ApiKey, User.email)
        .join(Membership)
        .join(Organization)
        .switch(Membership)
        .join(User)
        .where(Organization.public_id == org_public_id)
        .order_by(ApiKey.created_at, ApiKey.id)
        .objects()  # the owner's email on each key row: one query
    )
    return [(key, key.email) for key in keys]


class NotAMember(LookupError):
    """No member of the organization has that email (the CLI says how to add one)."""

    def __init__(self, email: str, org_public_id: str) -> None:
        super().__init__(f"{email} is not a member of {org_public_id}")
        self.email = email
        self.org_public_id = org_public_id


def operator_create_key(org_public_id: str, email: str) -> tuple[ApiKey, str]:
    """A new key for the member with that email; the raw key once. LookupError when there is no such
    organization, NotAMember when no member has that email."""
    membership = (
        Membership.select()
        .join(Organization)
        .switch(Membership)
        .join(User)
        .where((Organization.public_id == org_public_id) & (User.email == normalize_email(email)))
        .first()
    )
    if membership is None:
        _require_org(org_public_id)
        raise NotAMember(email, org_public_id)
    with db.atomic():
        return issue_key(membership)


class LastOwnerKey(Exception):
    """The operator's revocation of an organization's last active owner key, refused (not forced)."""

    def __init__(self, key_public_id: str, org_public_id: str, email: str) -> None:
        super().__init__(f"{key_public_id} is the last active owner key of {org_public_id}")
        self.key_public_id = key_public_id
        self.org_public_id = org_public_id
        self.email = email  # the owner whose key it is


@dataclass(frozen=True)
class OperatorRevocation:
    """A key the operator revoked: its organization, its member's email, and whether it was the
    organization's last active owner key (forced)."""

    org_public_id: str
    email: str
    was_last_owner_key: bool


def operator_revoke_key(key_public_id: str, force: bool = False) -> OperatorRevocation | None:
    """Revoke a key of any organization; None when there is no active key with that id.

    The organization's last active owner key is refused with LastOwnerKey, as the API refuses it
    (409), unless `force`. The check and the write hold the organization's row lock, as revoke_key's
    do; the API processes are told after the commit (a RedisError then leaves the key revoked).
    """
    key = (
        ApiKey.select(ApiKey, Membership, Organization, User)
        .join(Membership)
        .join(Organization)
        .switch(Membership)
        .join(User)
        .where((ApiKey.public_id == key_public_id) & ApiKey.revoked_at.is_null())
        .first()
    )
    if key is None:
        return None
    org, email = key.membership.organization, key.membership.user.email
    refuse = None if force else (lambda _: LastOwnerKey(key_public_id, org.public_id, email))
    revoked, last = _revoke_under_lock(org, key, refuse_last=refuse)
    if not revoked:  # revoked by another call since the lookup, which told the processes
        return None
    announce_revocation()
    return OperatorRevocation(org.public_id, email, last)
