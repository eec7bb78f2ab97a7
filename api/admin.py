"""Operator pages: rq-dashboard mounted at /admin/rq behind HTTP Basic auth.

Credentials come from settings.admin_user / admin_password (CLIPTEXT_ADMIN_USER / _PASSWORD), checked
in constant time. With either unset the dashboard is not mounted at all (404), never left open.
State-changing requests (requeue, delete) coming from another site are refused: a browser resends
cached Basic credentials, so a cross-site form could otherwise act as the operator.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, request
from rq_dashboard.web import setup_rq_connection

from cliptext.settings import Settings

URL_PREFIX = "/admin/rq"
BLUEPRINT = "rq_dashboard"
_REALM = 'Basic realm="cliptext operators", charset="UTF-8"'
_CHANGING_GETS = {f"{BLUEPRINT}.requeue_all"}  # rq-dashboard requeues on GET too


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _challenge() -> Response:
    return Response("Operator credentials required\n", 401, {"WWW-Authenticate": _REALM})


def _cross_site() -> bool:
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    return bool(origin) and urlsplit(origin).netloc != request.host


def mount_admin(app: Flask, settings: Settings) -> bool:
    """Mount rq-dashboard at /admin/rq when operator credentials are configured; True when mounted."""
    if not settings.admin_user or not settings.admin_password:
        return False
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.config.setdefault("KEYLESS_BLUEPRINTS", set()).add(BLUEPRINT)
    with app.app_context():
        setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)

    @app.before_request
    def operator_only() -> Response | None:
        if request.blueprint != BLUEPRINT:
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and _same(auth.username or "", settings.admin_user)
            and _same(auth.password or "", settings.admin_password)
        )
        if not ok:
            return _challenge()
        changes = request.method not in {"GET", "HEAD", "OPTIONS"} or request.endpoint in _CHANGING_GETS
        if changes and _cross_site():
            return Response("Cross-site request refused\n", 403)
        return None

    return True
