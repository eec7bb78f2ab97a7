"""Operator pages: rq-dashboard mounted at /admin/rq behind HTTP Basic auth.

Credentials come from settings.admin_user / admin_password (CLIPTEXT_ADMIN_USER / _PASSWORD), checked
in constant time. With either unset the dashboard is not mounted at all (404), never left open.

- Guessing is throttled: after `ADMIN_AUTH_MAX_FAILURES` wrong credentials from one client address
  within `ADMIN_AUTH_WINDOW_SECONDS` (Flask config, 10 per 300 s), every request of that address is
  answered 429 with Retry-After until the window ends, the right password included (else the one
  answer that is not a 429 would tell the password). The counters live in Redis: every process shares
  them. Requests without credentials (a browser's first try, before its prompt) are not counted.
- State-changing requests (requeue, delete, empty, compact) must come from the dashboard's own pages:
  a browser resends cached Basic credentials, so a page of another site could otherwise act as the
  operator. They are refused (403) unless the browser says they are same-origin (`Sec-Fetch-Site`
  same-origin or none) or carry an Origin or Referer of this host, and never accepted as GET/HEAD
  (rq-dashboard's own JavaScript sends every one of them with `$.post`). The dashboard's pages are
  served with `Referrer-Policy: same-origin`, so a browser sends their real Origin with those POSTs.

`create_dashboard_app()` is the dashboard alone, for its own gunicorn (compose's `rq-dashboard` service).
"""

from __future__ import annotations

import hmac
import math
import time
from typing import Any
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, redirect, request
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from rq_dashboard.web import setup_rq_connection

from api.errors import error_response, register_error_handlers
from cliptext.errors import ErrorCode
from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings

URL_PREFIX = "/admin/rq"
BLUEPRINT = "rq_dashboard"
_REALM = 'Basic realm="cliptext operators", charset="UTF-8"'
# rq-dashboard accepts GET on requeue-all too; its own pages only ever POST there
_POST_ONLY = {f"{BLUEPRINT}.requeue_all"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# what a browser sends (Sec-Fetch-Site) for a request made by this origin's page, or typed by the user
_SAME_SITE_FETCHES = {"same-origin", "none"}
DEFAULT_MAX_FAILURES = 10
DEFAULT_WINDOW_SECONDS = 300
DASHBOARD_HEADERS = {
    "Referrer-Policy": "same-origin",  # the dashboard's own POSTs then carry its Origin
    "X-Frame-Options": "DENY",  # no other site may frame it and have its buttons clicked
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _challenge() -> Response:
    return error_response(
        ErrorCode.UNAUTHORIZED,
        "Operator credentials required",
        status=401,
        headers={"WWW-Authenticate": _REALM},
    )


def _this_host(url: str) -> bool:
    return urlsplit(url).netloc.lower() == request.host.lower()


def _same_origin() -> bool:
    """Whether the browser vouches that this request comes from the dashboard's own origin.

    A Sec-Fetch-Site other than same-origin/none is refused whatever else is sent. Otherwise an Origin
    (other than "null") or else a Referer must name this host. A request with neither is accepted only
    on a browser's Sec-Fetch-Site: same-origin/none (the fetch metadata no page can forge); one with no
    header at all is refused, since a page can make a browser send neither (referrerpolicy=no-referrer).
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in _SAME_SITE_FETCHES:
        return False
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return _this_host(origin)
    referer = request.headers.get("Referer")
    if referer:
        return _this_host(referer)
    return site is not None


class _AuthThrottle:
    """Failed Basic-auth attempts per client address, in a fixed window that starts at the first failure,
    counted in Redis by the `limits` library (flask-limiter's) so every API process shares them."""

    def __init__(self, redis_url: str, prefix: str, max_failures: int, window: int) -> None:
        storage = RedisStorage(
            redis_url, key_prefix=f"{prefix}admin", socket_timeout=5, socket_connect_timeout=2
        )  # keys: {prefix}admin:auth-failures/{address}/…
        self.limiter = FixedWindowRateLimiter(storage)
        self.limit = RateLimitItemPerSecond(max_failures, window, namespace="auth-failures")

    @staticmethod
    def _client() -> str:
        return request.remote_addr or "unknown"

    def blocked_for(self) -> int:
        """Seconds this client must wait before it may try again; 0 when it may try now."""
        if self.limiter.test(self.limit, self._client()):
            return 0
        reset_at = self.limiter.get_window_stats(self.limit, self._client()).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def failed(self) -> int:
        """Count one failure; the seconds to wait when that was one too many, else 0."""
        self.limiter.hit(self.limit, self._client())
        return self.blocked_for()

    @staticmethod
    def refusal(seconds: int) -> Response:
        return error_response(
            ErrorCode.RATE_LIMITED,
            f"Too many failed operator sign-ins from this address; retry in {seconds} s",
            {"retry_after": seconds},
            status=429,
            headers={"Retry-After": str(seconds)},
        )


def mount_admin(app: Flask, settings: Settings) -> bool:
    """Mount rq-dashboard at /admin/rq when operator credentials are configured; True when mounted."""
    if not settings.admin_user or not settings.admin_password:
        return False
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.config.setdefault("KEYLESS_BLUEPRINTS", set()).add(BLUEPRINT)
    throttle = _AuthThrottle(
        settings.redis_url,
        app.config.get("REDIS_KEY_PREFIX", "cliptext:"),
        int(app.config.setdefault("ADMIN_AUTH_MAX_FAILURES", DEFAULT_MAX_FAILURES)),
        int(app.config.setdefault("ADMIN_AUTH_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS)),
    )
    with app.app_context():
        setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)

    @app.before_request
    def operator_only() -> Response | None:
        if request.blueprint != BLUEPRINT:
            return None
        wait = throttle.blocked_for()
        if wait:
            return throttle.refusal(wait)
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and _same(auth.username or "", settings.admin_user)
            and _same(auth.password or "", settings.admin_password)
        )
        if not ok:
            if "Authorization" in request.headers:  # a guess; a browser's first try sends none
                wait = throttle.failed()
                if wait:
                    return throttle.refusal(wait)
            return _challenge()
        changing_get = request.endpoint in _POST_ONLY and request.method in {"GET", "HEAD"}
        if (request.method not in _SAFE_METHODS or changing_get) and not _same_origin():
            return error_response(
                ErrorCode.FORBIDDEN,
                "Cross-site request refused: changes must come from the dashboard's own pages",
                status=403,
            )
        if changing_get:
            return error_response(
                ErrorCode.METHOD_NOT_ALLOWED,
                "Method not allowed",
                {"allowed": ["POST"]},
                status=405,
                headers={"Allow": "POST"},
            )
        return None

    @app.after_request
    def dashboard_headers(response: Response) -> Response:
        if request.blueprint == BLUEPRINT:
            response.headers.update(DASHBOARD_HEADERS)
        return response

    return True


def create_dashboard_app(overrides: dict[str, Any] | None = None) -> Flask:
    """The operators' dashboard alone, at /admin/rq/ (/ redirects there), with mount_admin's protections.

    compose's `rq-dashboard` service runs it: `gunicorn -c python:api.gunicorn_conf
    'api.admin:create_dashboard_app()'`. It needs REDIS_URL and CLIPTEXT_ADMIN_USER / _PASSWORD only.
    Upper-case `overrides` go to Flask's config (REDIS_KEY_PREFIX, ADMIN_AUTH_MAX_FAILURES, ...).
    """
    settings = Settings.from_env()
    app = Flask(__name__)
    app.config.update(REDIS_KEY_PREFIX="cliptext:")
    app.config.update(overrides or {})
    configure_logging(settings)
    register_error_handlers(app)
    if not mount_admin(app, settings):
        from gunicorn.errors import AppImportError  # gunicorn prints its message alone and stops

        raise AppImportError(
            "configuration error: the operators' dashboard needs CLIPTEXT_ADMIN_USER and "
            "CLIPTEXT_ADMIN_PASSWORD"
        )

    @app.get("/")
    def index() -> Response:
        return redirect(f"{URL_PREFIX}/")

    return app
