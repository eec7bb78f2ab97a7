"""Organizations and their members: creation (CLI), listing, adding members (owners and admins via
the API, the operator via the CLI), listing and removing them and changing their roles (API), and the
webhook signing secret: shown and rotated by owners and admins (API) or the operator (CLI).

Who may do what to members (API): any member lists them; owners and admins remove members and change
roles, only owners touch owners or make owners; anyone may leave (remove themselves). The
organization's last owner is neither removed nor demoted (409): the check and the write hold the
organization's row lock, as the last owner key's do (api.services.keys), so two removals at once
cannot both take one of its last two owners.
"""

from __future__ import annotations

import datetime as dt
import secrets
import unicodedata
from dataclasses import dataclass

import marshmallow as ma
import peewee as pw

from api.auth import announce_revocation, issue_key
from api.db import locked, write_transaction
from api.errors import ApiError, NotFound
from api.models import ApiKey, Membership, Organization, Plan, Role, User, db, utcnow
from api.services.plans import Limits, limits_for
from cliptext.errors import ErrorCode


def normalize_email(email: str) -> str:
    """The one form an email is stored and looked up in: NFKC, trimmed, lower-cased.

    NFKC first, so that look-alike forms are one member: fullwidth "ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ" is
    "user@example.com" (the email validator accepts both). It can lengthen the text, as lower-casing
    can ("ﬀ" is "ff", "İ" is two characters in lower case): callers check the length of the result.
    """
    return unicodedata.normalize("NFKC", email).strip().lower()


@dataclass(frozen=True)
class OrgView:
    """An organization as one member sees it."""

    public_id: str
    name: str
    plan: str
    role: str
    member_count: int
    limits: Limits
    created_at: object


def _view(membership: Membership) -> OrgView:
    org = membership.organization
    return OrgView(
        public_id=org.public_id,
        name=org.name,
        plan=org.plan,
        role=membership.role,
        member_count=Membership.select().where(Membership.organization == org).count(),
        limits=limits_for(org),
        created_at=org.created_at,
    )


def _own_membership(membership: Membership) -> Membership:
    """The key's membership as the database has it now (its role may have changed since the key's
    lookup was cached), with its organization."""
    found = (
        Membership.select(Membership, Organization)
        .join(Organization)
        .where(Membership.id == membership.id)
        .first()
    )
    if found is None:
        raise NotFound("Organization")
    return found


def list_orgs(membership: Membership) -> list[OrgView]:
    """The organization the calling key belongs to.

    An API key is issued for one membership, so it speaks for that organization only: a person who
    is also in other organizations uses those organizations' keys there (a key of org A listing org B,
    or adding owners to it with the person's role in B, let any holder of that key act in B).
    """
    return [_view(_own_membership(membership))]


def membership_in(membership: Membership, org_public_id: str) -> Membership:
    """The key's membership if it is of that organization; any other is 404 (it does not exist for
    this key), as an unknown id is."""
    mine = _own_membership(membership)
    if mine.organization.public_id != org_public_id:
        raise NotFound("Organization")
    return mine


def get_org(membership: Membership, org_public_id: str) -> OrgView:
    return _view(membership_in(membership, org_public_id))


def member_of(org: Organization, user_public_id: str) -> Membership:
    """The membership of that user (usr_…) in the organization, with its user; 404 when there is none
    (a user of another organization, or none at all)."""
    found = (
        Membership.select(Membership, User)
        .join(User)
        .where((Membership.organization == org) & (User.public_id == user_public_id))
        .first()
    )
    if found is None:
        raise NotFound("Member")
    return found


@dataclass(frozen=True)
class MemberView:
    """A member as listed: the user's id and email, their role, when they joined."""

    id: str
    email: str
    role: str
    created_at: dt.datetime


def member_view(user: User, membership: Membership) -> MemberView:
    return MemberView(user.public_id, user.email, membership.role, membership.created_at)


@dataclass(frozen=True)
class MemberPage:
    data: list[MemberView]
    has_more: bool


def list_members(
    actor: Membership, org_public_id: str, limit: int = 100, starting_after: str | None = None
) -> MemberPage:
    """The organization's members, for any of them, `limit` at a time, in user order.

    Users are never deleted, so a page runs on from its `starting_after` user even when that member
    was removed since (a script removing members as it pages through them); an id that names no user
    is a 422.
    """
    org = membership_in(actor, org_public_id).organization
    query = (
        Membership.select(Membership, User).join(User).where(Membership.organization == org).order_by(User.id)
    )
    if starting_after:
        after = User.select(User.id).where(User.public_id == starting_after).first()
        if after is None:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                "starting_after does not name a member",
                {"field": "starting_after"},
            )
        query = query.where(User.id > after.id)
    rows = list(query.limit(limit + 1))
    return MemberPage([member_view(row.user, row) for row in rows[:limit]], has_more=len(rows) > limit)


def _owner_count(org: Organization) -> int:
    """How many owners the organization has: read under its row lock by the last-owner checks."""
    return (
        Membership.select().where((Membership.organization == org) & (Membership.role == Role.OWNER)).count()
    )


def _last_owner_conflict(target: Membership, action: str) -> ApiError:
    return ApiError(
        ErrorCode.CONFLICT,
        f"This is the organization's last owner and cannot be {action}; make another member an owner first",
        {"user_id": target.user.public_id},
    )


def _refuse_taking_an_owner(org: Organization, target: Membership, action: str) -> None:
    """409 when `target` is an owner the organization cannot lose (removed or demoted): its last owner,
    or the one holding every active owner key (they left the organization no key that manages owners,
    and revoking that last key is refused too). Under the organization's row lock."""
    from api.services.keys import holds_every_owner_key  # keys imports this module

    if target.role != Role.OWNER:
        return
    if _owner_count(org) == 1:
        raise _last_owner_conflict(target, action)
    if holds_every_owner_key(org, target):
        raise ApiError(
            ErrorCode.CONFLICT,
            f"This owner holds the organization's last owner keys and cannot be {action}; create a key "
            "for another owner first",
            {"user_id": target.user.public_id},
        )


def _locked_parties(
    actor: Membership, org: Organization, user_public_id: str
) -> tuple[Membership, Membership]:
    """Inside a write_transaction: take the organization's row lock, then read the actor's membership
    (its role may have changed, or it may be gone: 404) and the target's (404 when not a member) as
    they are now, so the checks that follow see what the write will change."""
    locked(Organization.select().where(Organization.id == org.id)).first()
    return _own_membership(actor), member_of(org, user_public_id)


def remove_member(actor: Membership, org_public_id: str, user_public_id: str) -> None:
    """Remove a member and, in the same transaction, every key they hold in the organization.

    Anyone may remove themselves; owners and admins remove others, only owners remove owners (403).
    The last owner is kept (409). Every API process refuses the removed member's keys from its next
    request (api.auth's generation, moved on once the removal is committed).
    """
    from api.services.keys import delete_member_keys  # keys imports this module

    org = membership_in(actor, org_public_id).organization
    with write_transaction():
        mine, target = _locked_parties(actor, org, user_public_id)
        if target.id != mine.id:
            if mine.role not in Role.MANAGERS:
                raise ApiError(ErrorCode.FORBIDDEN, "Only owners and admins can remove other members")
            if target.role == Role.OWNER and mine.role != Role.OWNER:
                raise ApiError(ErrorCode.FORBIDDEN, "Only owners can remove owners")
        _refuse_taking_an_owner(org, target, "removed")
        delete_member_keys(target)
        Membership.delete().where(Membership.id == target.id).execute()
    announce_revocation()  # after the commit: a process that looks a removed key up again finds none


def change_role(actor: Membership, org_public_id: str, user_public_id: str, role: str) -> MemberView:
    """Set a member's role: owners any member's to any role; admins only between member and admin, and
    not an owner's (403); members none. The last owner is not demoted (409)."""
    org = membership_in(actor, org_public_id).organization
    with write_transaction():
        mine, target = _locked_parties(actor, org, user_public_id)
        if mine.role not in Role.MANAGERS:
            raise ApiError(ErrorCode.FORBIDDEN, "Only owners and admins can change roles")
        if mine.role != Role.OWNER and Role.OWNER in (target.role, role):
            raise ApiError(ErrorCode.FORBIDDEN, "Only owners can make owners or change an owner's role")
        if role != Role.OWNER:
            _refuse_taking_an_owner(org, target, "demoted")
        Membership.update(role=role).where(Membership.id == target.id).execute()
        target.role = role
    return member_view(target.user, target)


def add_member(actor: Membership, org_public_id: str, email: str, role: str) -> tuple[User, Membership]:
    """Owners and admins add members; only an owner may add another owner. Already a member → 409."""
    mine = membership_in(actor, org_public_id)
    if mine.role not in Role.MANAGERS:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners and admins can add members")
    if role == Role.OWNER and mine.role != Role.OWNER:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners can add owners")
    try:
        return _join(mine.organization, email, role)
    except InvalidOrg as error:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "The request is invalid; see details.fields",
            {"fields": {error.field: [error.message]}},
        ) from error
    except AlreadyMember as error:
        raise ApiError(ErrorCode.CONFLICT, "This user is already a member", {"email": error.email}) from error


def operator_add_member(org_public_id: str, email: str, role: str = Role.MEMBER) -> tuple[User, Membership]:
    """The operator's add_member (CLI, no membership, so no permission check): any organization, any
    role. LookupError when there is no such organization, InvalidOrg for the email or role, AlreadyMember."""
    return _join(_org_by_public_id(org_public_id), email, role)


class AlreadyMember(Exception):
    """The user with that (normalized) email is already a member of the organization."""

    def __init__(self, email: str) -> None:
        super().__init__(f"{email} is already a member")
        self.email = email


def _join(org: Organization, email: str, role: str) -> tuple[User, Membership]:
    """Add the user with that email (created if new) to `org` with `role`: the checks and the write both
    add_member and operator_add_member make. InvalidOrg for the email or role, AlreadyMember (the unique
    membership, so two adds at once cannot both succeed)."""
    if role not in Role.ALL:
        raise InvalidOrg("role", f"must be one of {', '.join(Role.ALL)}, got {role!r}")
    email = _checked_email(email, "email")
    try:
        # reads (is there such a user?) then writes: BEGIN IMMEDIATE on SQLite, where a deferred
        # transaction that read failed at once ("database is locked", a 503) if another writer
        # committed in between: a quarter of the adds of a script adding members in parallel
        with write_transaction():
            user, _ = User.get_or_create(email=email)
            membership = Membership.create(organization=org, user=user, role=role)
    except pw.IntegrityError as error:
        raise AlreadyMember(email) from error
    return user, membership


class InvalidOrg(ValueError):
    """An argument create_org or operator_add_member refuses; `field` names it (the CLI's option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# PostgreSQL's integer, the type of the custom limit columns
MAX_CUSTOM_LIMIT = 2**31 - 1
_EMAIL = ma.validate.Email()


def _checked_email(email: str, field: str) -> str:
    """The email to store: normalized (normalize_email), or InvalidOrg naming `field` when it is empty,
    longer than the column once normalized (normalizing can lengthen it), or not an email address."""
    normalized = normalize_email(email)
    longest = User.email.max_length
    if not normalized:
        raise InvalidOrg(field, "must not be empty")
    if len(normalized) > longest:
        raise InvalidOrg(field, f"must be at most {longest} characters, got {len(normalized)}")
    try:
        _EMAIL(normalized)
    except ma.ValidationError:
        raise InvalidOrg(field, f"{email.strip()!r} is not an email address") from None
    return normalized


def _checked_org(
    name: str,
    owner_email: str,
    plan: str,
    custom_rate_limit: int | None,
    custom_concurrent_uploads: int | None,
) -> tuple[str, str]:
    """The name and owner email to store (trimmed; the email normalized), or InvalidOrg."""
    if plan not in Plan.ALL:
        raise InvalidOrg("plan", f"must be one of {', '.join(Plan.ALL)}")
    name = name.strip()
    longest = Organization.name.max_length
    if not name:
        raise InvalidOrg("name", "must not be empty")
    if len(name) > longest:
        raise InvalidOrg("name", f"must be at most {longest} characters, got {len(name)}")
    email = _checked_email(owner_email, "owner_email")
    limits = {"custom_rate_limit": custom_rate_limit, "custom_concurrent_uploads": custom_concurrent_uploads}
    for field, value in limits.items():
        if value is None:
            continue
        if plan != Plan.ENTERPRISE:
            raise InvalidOrg(field, f"custom limits are for the enterprise plan only, not {plan}")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CUSTOM_LIMIT:
            raise InvalidOrg(field, f"must be a whole number from 1 to {MAX_CUSTOM_LIMIT}, got {value!r}")
    return name, email


def create_org(
    name: str,
    owner_email: str,
    plan: str = Plan.FREE,
    custom_rate_limit: int | None = None,
    custom_concurrent_uploads: int | None = None,
) -> tuple[Organization, ApiKey, str]:
    """A new organization with its owner and the owner's first API key (raw key returned once).

    Refused with InvalidOrg (nothing written): an unknown plan, an empty name or one longer than the
    column, an owner that is not an email address, custom limits below 1 or past the column's integer,
    and custom limits on any plan but enterprise (the only one that reads them: `plans.limits_for`).
    """
    name, email = _checked_org(name, owner_email, plan, custom_rate_limit, custom_concurrent_uploads)
    with db.atomic():
        org = Organization.create(
            name=name,
            plan=plan,
            custom_rate_limit=custom_rate_limit,
            custom_concurrent_uploads=custom_concurrent_uploads,
        )
        user, _ = User.get_or_create(email=email)
        membership = Membership.create(organization=org, user=user, role=Role.OWNER)
        key, raw = issue_key(membership)
    return org, key, raw


# How long the secret a rotation replaced still signs deliveries (beside the new one): the time a
# receiver has to switch to the new secret without refusing a delivery.
WEBHOOK_SECRET_OVERLAP = dt.timedelta(hours=24)


@dataclass(frozen=True)
class WebhookSecret:
    """The secret deliveries are signed with, and until when the one it replaced signs them too."""

    secret: str
    previous_secret_valid_until: dt.datetime | None


def previous_secret_valid_until(org: Organization, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the secret the last rotation replaced stops signing deliveries; None when it no longer
    does (or the organization was never rotated)."""
    if org.webhook_secret_previous is None or org.webhook_secret_rotated_at is None:
        return None
    until = org.webhook_secret_rotated_at + WEBHOOK_SECRET_OVERLAP
    return until if until > (now or utcnow()) else None


def signing_secrets(org: Organization, now: dt.datetime | None = None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, then the previous one while it is
    within its overlap (the job sends a signature for each)."""
    found = [org.webhook_secret]
    if previous_secret_valid_until(org, now) is not None:
        found.append(org.webhook_secret_previous)
    return found


def _secret_of(org: Organization) -> WebhookSecret:
    return WebhookSecret(org.webhook_secret, previous_secret_valid_until(org))


def _new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def _rotate(org_id: int) -> WebhookSecret | None:
    """Replace the organization's secret with a new one, keeping the old one as the previous. The row
    is locked between reading the old secret and writing: of two rotations at once, the second starts
    from the first one's secret (unlocked, both kept the same old one and the first's new secret, maybe
    already handed to a receiver, was lost). None when there is no such organization."""
    with write_transaction():
        org = locked(Organization.select().where(Organization.id == org_id)).first()
        if org is None:
            return None
        org.webhook_secret_previous = org.webhook_secret
        org.webhook_secret = _new_webhook_secret()
        org.webhook_secret_rotated_at = utcnow()
        org.save(
            only=[
                Organization.webhook_secret,
                Organization.webhook_secret_previous,
                Organization.webhook_secret_rotated_at,
            ]
        )
    return _secret_of(org)


def _managed_org(actor: Membership, org_public_id: str) -> Organization:
    """The actor's organization when it is `org_public_id` (else 404) and the actor manages it (else 403)."""
    mine = membership_in(actor, org_public_id)
    if mine.role not in Role.MANAGERS:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners and admins can see or rotate the webhook secret")
    return mine.organization


def webhook_secret(actor: Membership, org_public_id: str) -> WebhookSecret:
    """The organization's webhook secret, for its owners and admins."""
    return _secret_of(_managed_org(actor, org_public_id))


def rotate_webhook_secret(actor: Membership, org_public_id: str) -> WebhookSecret:
    """A new webhook secret, for owners and admins; the old one signs too for WEBHOOK_SECRET_OVERLAP."""
    rotated = _rotate(_managed_org(actor, org_public_id).id)
    if rotated is None:
        raise NotFound("Organization")
    return rotated


def _org_by_public_id(org_public_id: str) -> Organization:
    org = Organization.get_or_none(Organization.public_id == org_public_id)
    if org is None:
        raise LookupError(f"no organization {org_public_id}")
    return org


def operator_webhook_secret(org_public_id: str) -> WebhookSecret:
    """The operator's view (CLI, no membership): the secret of any organization, or LookupError."""
    return _secret_of(_org_by_public_id(org_public_id))


def operator_rotate_webhook_secret(org_public_id: str) -> WebhookSecret:
    """The operator's rotation (CLI, no membership), as rotate_webhook_secret; LookupError when there
    is no such organization."""
    rotated = _rotate(_org_by_public_id(org_public_id).id)
    if rotated is None:
        raise LookupError(f"no organization {org_public_id}")
    return rotated
