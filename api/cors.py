"""Which web pages a browser lets call the API (CORS), with flask-cors.

A signed upload URL answers any origin: its signature is the whole authority, the browser sends no
cookie, and its answer says nothing a caller without the URL could use, so a web app's page can PUT a
file straight to the URL its back end presigned (the point of presigned uploads). The rest of the API
answers the origins of CLIPTEXT_CORS_ORIGINS only (none by default): a page that calls it holds an API
key in the browser, which an operator allows knowingly.
"""

from __future__ import annotations

import re

from flask import Flask
from flask_cors import CORS

SIGNED_UPLOAD_PATH = r"^/v1/uploads/[^/]+/content$"
API_PATHS = r"^/v1/.*$"
# what a page may send besides the simple headers: the key, JSON or a file's type, and our own
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id")
# what a page may read of an answer besides the simple headers: ids to quote, limits and waits, a replay
EXPOSED_HEADERS = (
    "X-Request-Id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "Location",
)
METHODS = ("GET", "POST", "PUT", "DELETE")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


def exact_origin(origin: str) -> str | re.Pattern[str]:
    """An allowed origin as flask-cors must be given it to match that origin only ('*' stays any).

    flask-cors takes a string holding any of []()?$^*\\ for a regular expression, matched at the start
    only: an IPv6 origin such as http://[::1] became the class [:1], so http://1evil.com was let in and
    http://[::1] itself was not. Escaped and anchored, every origin is compared whole, as a literal."""
    if origin == "*":
        return origin
    return re.compile(re.escape(origin) + r"\Z", re.IGNORECASE)


def install_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Answer preflights and add CORS headers to every answer (errors included, so a page can read
    the envelope) for the signed upload URL from any origin and for the API from `origins`."""
    resources: dict[str, dict] = {
        SIGNED_UPLOAD_PATH: {"origins": "*", "methods": ["PUT"], "send_wildcard": True}
    }
    if origins:
        resources[API_PATHS] = {"origins": [exact_origin(origin) for origin in origins]}
    CORS(
        app,
        resources=resources,
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        methods=list(METHODS),
        max_age=PREFLIGHT_MAX_AGE,
        supports_credentials=False,
        vary_header=True,
        # a request without Origin (no browser asking) gets no CORS header: flask-cors's default named
        # every allowed origin to anyone, on every answer (GET /v1/health needs no key)
        always_send=False,
    )
