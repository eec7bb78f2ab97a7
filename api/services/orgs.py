"""Organizations and their members: creation (CLI), listing, adding members (owner/admin only)."""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw

from api.auth import issue_key
from api.errors import ApiError, NotFound
from api.models import ApiKey, Membership, Organization, Plan, Role, User, db
from api.services.plans import Limits, limits_for
from cliptext.errors import ErrorCode


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


def memberships_of(user: User) -> list[Membership]:
    return list(
        Membership.select(Membership, Organization)
        .join(Organization)
        .where(Membership.user == user)
        .order_by(Organization.created_at, Organization.id)
    )


def list_orgs(user: User) -> list[OrgView]:
    return [_view(m) for m in memberships_of(user)]


def membership_in(user: User, org_public_id: str) -> Membership:
    """The user's membership in that organization; not a member → 404 (it does not exist for them)."""
    membership = (
        Membership.select(Membership, Organization)
        .join(Organization)
        .where((Membership.user == user) & (Organization.public_id == org_public_id))
        .first()
    )
    if membership is None:
        raise NotFound("Organization")
    return membership


def get_org(user: User, org_public_id: str) -> OrgView:
    return _view(membership_in(user, org_public_id))


def add_member(actor: User, org_public_id: str, email: str, role: str) -> tuple[User, Membership]:
    """Owners and admins add members; only an owner may add another owner. Already a member → 409."""
    mine = membership_in(actor, org_public_id)
    if mine.role not in Role.MANAGERS:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners and admins can add members")
    if role == Role.OWNER and mine.role != Role.OWNER:
        raise ApiError(ErrorCode.FORBIDDEN, "Only owners can add owners")
    email = email.strip().lower()
    try:
        with db.atomic():
            user, _ = User.get_or_create(email=email)
            membership = Membership.create(organization=mine.organization, user=user, role=role)
    except pw.IntegrityError as error:
        raise ApiError(ErrorCode.CONFLICT, "This user is already a member", {"email": email}) from error
    return user, membership


def create_org(
    name: str,
    owner_email: str,
    plan: str = Plan.FREE,
    custom_rate_limit: int | None = None,
    custom_concurrent_uploads: int | None = None,
) -> tuple[Organization, ApiKey, str]:
    """A new organization with its owner and the owner's first API key (raw key returned once)."""
    if plan not in Plan.ALL:
        raise ValueError(f"plan must be one of {Plan.ALL}")
    with db.atomic():
        org = Organization.create(
            name=name,
            plan=plan,
            custom_rate_limit=custom_rate_limit,
            custom_concurrent_uploads=custom_concurrent_uploads,
        )
        user, _ = User.get_or_create(email=owner_email.strip().lower())
        membership = Membership.create(organization=org, user=user, role=Role.OWNER)
        key, raw = issue_key(membership)
    return org, key, raw


def _require_org(org_public_id: str) -> None:
    """LookupError naming the organization when there is none with this id (the CLI prints it)."""
    if not Organization.select().where(Organization.public_id == org_public_id).exists():
        raise LookupError(f"no organization {org_public_id}")


def list_keys(org_public_id: str) -> list[tuple[ApiKey, str]]:
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


def create_key(org_public_id: str, email: str) -> tuple[ApiKey, str]:
    membership = (
        Membership.select()
        .join(Organization)
        .switch(Membership)
        .join(User)
        .where((Organization.public_id == org_public_id) & (User.email == email.strip().lower()))
        .first()
    )
    if membership is None:
        _require_org(org_public_id)
        raise LookupError(f"{email} is not a member of {org_public_id}")
    with db.atomic():
        return issue_key(membership)
