"""The Cliptext REST API: `create_app()` (used by `flask --app api`, gunicorn `api:create_app()` and tests).

Order of configuration: defaults, then the environment (cliptext.settings), then `overrides`:
lower-case keys replace Settings fields, upper-case keys go to Flask's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
import redis
from flask import Flask
from flask.cli import ScriptInfo
from flask_smorest import Api
from itsdangerous import URLSafeTimedSerializer

from api.admin import mount_admin
from api.auth import load_principal
from api.blueprints.uploads import hold_upload_slot, release_upload_slot
from api.cors import install_cors
from api.db import init_db
from api.errors import ErrorSchema, register_error_handlers
from api.http_hooks import install_request_hooks, refuse_unstorable_input
from api.json_provider import OrjsonProvider
from api.metrics import install_metrics
from api.queue import QUEUE_NAME
from api.ratelimit import init_rate_limits
from api.slot_leases import SlotLeases
from api.state import AppState
from api.storage import open_storage
from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings, settings_or_exit

API_VERSION = "1.0.0"
API_DESCRIPTION = """\
Every /v1 request but health, the docs and the signed upload PUT carries `Authorization: Bearer <key>`; the
key and the plan's rate limit are checked before the body is read. Every error is
`{"error": {"code", "message", "details"}}` (OpenAI's shape on the OpenAI-compatible endpoints).

Input rules: JSON bodies of at most 1 MiB (413) nested at most 64 levels (400); strings must be valid
Unicode without NUL characters (422, naming the field; an id holding one is a 404); JSON is read in
UTF-8, UTF-16 or UTF-32, with or without a BOM.
"""


def loaded_by_flask_cli() -> bool:
    """True while `flask --app api …` loads the app for a command (not for a server such as gunicorn).

    Its commands do not migrate on load: `db upgrade` applies (and lists) the migrations itself, and
    the others refuse a database with pending migrations (api.cli) instead of changing its schema.
    """
    context = click.get_current_context(silent=True)
    return context is not None and context.find_object(ScriptInfo) is not None


class CliptextFlask(Flask):
    """Flask that checks each hook and view for a coroutine once, not on every call.

    Flask asks `inspect.iscoroutinefunction` about every before/after hook and every decorator layer
    of a view on each request (two dozen times for a GET here); the answer never changes.
    """

    MAX_REMEMBERED = 4096  # callables made per request (none today) must not grow the table forever

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ensured_sync: dict[Callable, Callable] = {}
        super().__init__(*args, **kwargs)

    def ensure_sync(self, func: Callable) -> Callable:
        try:
            return self._ensured_sync[func]
        except KeyError:
            ensured = super().ensure_sync(func)
            if len(self._ensured_sync) < self.MAX_REMEMBERED:
                self._ensured_sync[func] = ensured
            return ensured
        except TypeError:  # unhashable callable
            return super().ensure_sync(func)


class CliptextApi(Api):
    """flask-smorest Api whose error schema is our envelope, used for docs and for dumping alike."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        register_error_handlers(self._app)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    overrides = dict(overrides or {})
    # a bad setting ends a `flask --app api` command with one line, as every other entry point does
    settings = settings_or_exit() if loaded_by_flask_cli() else Settings.from_env()
    fields = {f.name for f in dataclasses.fields(Settings)}
    settings = dataclasses.replace(settings, **{k: overrides.pop(k) for k in list(overrides) if k in fields})

    app = CliptextFlask(__name__)
    app.url_map.merge_slashes = False  # /v1//orgs: a 404 envelope, not an HTML redirect
    app.json = OrjsonProvider(app)
    app.config.update(
        API_TITLE="Cliptext API",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": API_DESCRIPTION},
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "servers": [{"url": settings.public_base_url}],
        },
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        REDIS_KEY_PREFIX="cliptext:",
        RQ_QUEUE=QUEUE_NAME,
        MIGRATE_ON_START=not loaded_by_flask_cli(),  # the CLI migrates only by `db upgrade`
    )
    app.config.update({k: v for k, v in overrides.items() if k.isupper()})

    init_db(settings, migrate=app.config["MIGRATE_ON_START"])
    app.extensions["cliptext"] = AppState(
        settings=settings,
        redis=redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2),
        storage=open_storage(settings.storage_url, settings.storage_public_endpoint),
        signer=URLSafeTimedSerializer(settings.secret_key),
        redis_prefix=app.config["REDIS_KEY_PREFIX"],
        queue_name=app.config["RQ_QUEUE"],
        slot_leases=SlotLeases(settings.upload_slot_lease_seconds),
    )

    configure_logging(settings)
    install_request_hooks(app)
    install_cors(app, settings.cors_origins)
    install_metrics(app, settings)  # before the auth hook: refused requests are counted and timed too
    app.before_request(load_principal)  # before the rate limiter's hook: it counts per organization
    init_rate_limits(app, settings.redis_url, app.config["REDIS_KEY_PREFIX"])
    app.before_request(hold_upload_slot)  # a multipart upload's slot, taken before its body is read
    app.teardown_request(release_upload_slot)
    app.before_request(refuse_unstorable_input)  # the body is read only for a caller let in

    api = CliptextApi(app)
    from api.blueprints import docs, health, keys, openai, orgs, transcriptions, uploads

    for module in (health, uploads, transcriptions, orgs, keys, openai):
        api.register_blueprint(module.blp)
    app.register_blueprint(docs.blp)  # a page, not an API operation: outside the OpenAPI document

    mount_admin(app, settings)

    from api.cli import register_cli

    register_cli(app)
    return app
