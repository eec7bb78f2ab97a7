"""`flask --app api …` commands: organizations (their members and webhook secret), API keys, a local
dev key, database migrations.

Loading the app for these commands does not migrate the database (api.create_app): `db upgrade` applies
the pending migrations and lists them, and every command that reads or writes the tables first refuses,
in one line, a database that still has migrations to apply (run `flask --app api db upgrade`, or in
compose the `migrate` service). A command such as `keys revoke` never changes the schema on the side.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click
import peewee as pw
import redis
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from api.auth import hash_key
from api.models import ApiKey, Membership, Organization, Plan, Role, User, db
from api.services import keys as key_service
from api.services import orgs as org_service

orgs_cli = AppGroup("orgs", help="Manage organizations.")
keys_cli = AppGroup("keys", help="Manage API keys (members manage theirs through /v1/orgs/{id}/keys too).")
db_cli = AppGroup("db", help="Database migrations.")
uploads_cli = AppGroup("uploads", help="Upload housekeeping.")

DEV_ORG_NAME = "Local development"
DEV_EMAIL = "dev@localhost"


def _pending_migrations() -> list[str]:
    """The migrations not applied to the database yet, without creating anything in it."""
    from api.migrations import router

    database = db.obj
    with database.connection_context():
        found = router(database)
        if found.migrate_table not in database.get_tables():
            return list(found.todo)
        return found.diff


def _unreachable(error: pw.OperationalError) -> click.ClickException:
    """One line naming the setting to check: the driver's message spans several lines."""
    return click.ClickException(f"cannot open the database at DATABASE_URL: {' '.join(str(error).split())}")


def _require_database() -> None:
    """Stop with one line when the database does not answer (compose's `migrate` started before a
    managed database accepted connections, a mistyped host or password), not with a traceback."""
    try:
        with db.connection_context():
            pass
    except pw.OperationalError as error:
        raise _unreachable(error) from error


def needs_schema(command: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse to run `command` on a database with pending migrations (a clear line, exit status 1)."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            pending = _pending_migrations()
        except pw.OperationalError as error:
            raise _unreachable(error) from error
        if pending:
            raise click.ClickException(
                f"the database has {len(pending)} migration(s) to apply ({', '.join(pending)}): "
                "run `flask --app api db upgrade` first"
            )
        return command(*args, **kwargs)

    return checked


# the command-line name of each field create_org checks
_OPTION_OF = {
    "name": "NAME",
    "owner_email": "'--owner'",
    "plan": "'--plan'",
    "custom_rate_limit": "'--rate-limit'",
    "custom_concurrent_uploads": "'--concurrent-uploads'",
}


@orgs_cli.command("create")
@click.argument("name")
@click.option("--plan", type=click.Choice(Plan.ALL), default=Plan.FREE, show_default=True)
@click.option("--owner", "owner_email", required=True, help="Owner's email (the first API key is theirs).")
@click.option(
    "--rate-limit",
    type=click.IntRange(1, org_service.MAX_CUSTOM_LIMIT),
    default=None,
    help="Enterprise plan only: requests per minute (default: the plan's).",
)
@click.option(
    "--concurrent-uploads",
    type=click.IntRange(1, org_service.MAX_CUSTOM_LIMIT),
    default=None,
    help="Enterprise plan only: concurrent uploads (default: the plan's).",
)
@needs_schema
def create_org_command(
    name: str, plan: str, owner_email: str, rate_limit: int | None, concurrent_uploads: int | None
) -> None:
    """Create an organization and print its owner's first API key."""
    with db.connection_context():
        try:
            org, key, raw = org_service.create_org(name, owner_email, plan, rate_limit, concurrent_uploads)
        except org_service.InvalidOrg as error:
            raise click.BadParameter(error.message, param_hint=_OPTION_OF[error.field]) from error
    click.echo(f"organization: {org.public_id} ({plan})", err=True)
    click.echo(f"api key id:   {key.public_id} (shown once, store it now)", err=True)
    click.echo(raw)


@orgs_cli.command("add-member")
@click.option("--org", "org_id", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(Role.ALL), default=Role.MEMBER, show_default=True)
@needs_schema
def add_member_command(org_id: str, email: str, role: str) -> None:
    """Add a member to an organization (then `keys create` gives them a key); prints their usr_ id."""
    with db.connection_context():
        try:
            user, _ = org_service.operator_add_member(org_id, email, role)
        except org_service.InvalidOrg as error:
            raise click.BadParameter(error.message, param_hint=f"'--{error.field}'") from error
        except (LookupError, org_service.AlreadyMember) as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"added {user.email} to {org_id} as {role}", err=True)
    click.echo(user.public_id)


@orgs_cli.command("webhook-secret")
@click.argument("org_id")
@click.option("--rotate", is_flag=True, help="Replace it first; the old one signs too for 24 h.")
@needs_schema
def webhook_secret_command(org_id: str, rotate: bool) -> None:
    """Print an organization's webhook signing secret (hand it to its owner to verify deliveries)."""
    with db.connection_context():
        try:
            if rotate:
                found = org_service.operator_rotate_webhook_secret(org_id)
            else:
                found = org_service.operator_webhook_secret(org_id)
        except LookupError as error:
            raise click.ClickException(str(error)) from error
    if found.previous_secret_valid_until is not None:
        until = f"{found.previous_secret_valid_until:%Y-%m-%d %H:%M:%S} UTC"
        click.echo(f"the previous secret also signs deliveries until {until}", err=True)
    click.echo(found.secret)


@keys_cli.command("create")
@click.option("--org", "org_id", required=True)
@click.option("--email", required=True)
@needs_schema
def create_key_command(org_id: str, email: str) -> None:
    """Issue a new API key for a member of an organization."""
    with db.connection_context():
        try:
            key, raw = key_service.operator_create_key(org_id, email)
        except key_service.NotAMember as error:
            raise click.ClickException(
                f"{error}; add them first: flask --app api orgs add-member --org {org_id} --email "
                f"{email}  (or POST /v1/orgs/{org_id}/members)"
            ) from error
        except LookupError as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"api key id: {key.public_id}", err=True)
    click.echo(raw)


@keys_cli.command("list")
@click.option("--org", "org_id", required=True)
@needs_schema
def list_keys_command(org_id: str) -> None:
    """The keys of an organization (ids to revoke; the keys themselves are stored only hashed)."""
    with db.connection_context():
        try:
            keys = key_service.operator_list_keys(org_id)
        except LookupError as error:
            raise click.ClickException(str(error)) from error
    for key, email in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        created = f"{key.created_at:%Y-%m-%d %H:%M}"
        click.echo(f"{key.public_id}  {key.prefix}…  {email}  created {created}  used {used}  {state}")


@keys_cli.command("revoke")
@click.argument("key_id")
@click.option("--force", is_flag=True, help="Revoke it even if it is its organization's last owner key.")
@needs_schema
def revoke_key_command(key_id: str, force: bool) -> None:
    """Revoke an API key by its id (key_…); every API process refuses it from the next request.

    An organization's last active owner key is refused (as the API refuses it) unless --force."""
    with db.connection_context():
        try:
            revoked = key_service.operator_revoke_key(key_id, force)
        except key_service.LastOwnerKey as error:
            raise click.ClickException(
                f"{error}: without it no key of the organization can create owner keys; create another "
                f"first (flask --app api keys create --org {error.org_public_id} --email {error.email}), "
                "or pass --force"
            ) from error
        except redis.exceptions.RedisError as error:
            seconds = current_app.extensions["cliptext"].settings.auth_cache_seconds
            raise click.ClickException(
                f"{key_id} is revoked in the database, but Redis could not be told ({error}): API processes "
                f"that looked it up recently accept it for up to {seconds:g} s more"
            ) from error
    if revoked is None:
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")
    if revoked.was_last_owner_key:
        org = revoked.org_public_id
        click.echo(
            f"{org} now has no owner key: none of its keys can create owner keys or add owners; make one "
            f"with flask --app api keys create --org {org} --email {revoked.email}",
            err=True,
        )


def _dev_key_path() -> str:
    return os.path.join(current_app.extensions["cliptext"].settings.data_dir, "dev_api_key")


@click.command("dev-key")
@with_appcontext
@needs_schema
def dev_key_command() -> None:
    """Print a ready API key for a local dev organization (created once; the key is kept in the data dir)."""
    path = _dev_key_path()
    with db.connection_context():
        if os.path.exists(path):
            with open(path) as handle:
                raw = handle.read().strip()
            key = ApiKey.get_or_none(ApiKey.key_hash == hash_key(raw))
            if key is not None and key.revoked_at is None:
                click.echo(raw)
                return
        membership = (
            Membership.select()
            .join(Organization)
            .switch(Membership)
            .join(User)
            .where(
                (Organization.name == DEV_ORG_NAME)
                & (User.email == DEV_EMAIL)
                & (Membership.role == Role.OWNER)
            )
            .first()
        )
        if membership is None:
            _, _, raw = org_service.create_org(DEV_ORG_NAME, DEV_EMAIL, Plan.PRO)
        else:
            from api.auth import issue_key

            with db.atomic():
                _, raw = issue_key(membership)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw)
    click.echo(raw)


@db_cli.command("upgrade")
def db_upgrade_command() -> None:
    """Apply pending migrations."""
    from api.migrations import upgrade

    _require_database()
    applied = upgrade(db.obj)
    click.echo(f"applied: {', '.join(applied)}" if applied else "up to date")


@db_cli.command("new")
@click.argument("name")
def db_new_command(name: str) -> None:
    """Write a new migration from the difference between api/models.py and the migrations so far."""
    from api.migrations import router
    from api.models import ALL_MODELS

    with db.connection_context():
        created = router(db.obj).create(name, auto=ALL_MODELS)
    click.echo(f"created: {created}" if created else "no changes")


@uploads_cli.command("purge-expired")
@needs_schema
def purge_expired_command() -> None:
    """Delete uploads never completed before their URL expired, completed ones no transcription used
    for 24 h, and the partial files of killed writes (run it from cron)."""
    from api.services.uploads import purge_expired
    from api.state import state

    with db.connection_context():
        click.echo(f"purged {purge_expired(state())} expired upload(s)")


def register_cli(app: Flask) -> None:
    for group in (orgs_cli, keys_cli, db_cli, uploads_cli):
        app.cli.add_command(group)
    app.cli.add_command(dev_key_command)
