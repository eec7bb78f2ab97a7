"""Which web pages a browser lets call the API (CORS), with flask-cors.

A signed upload URL answers any origin: its signature is the whole authority, the browser sends no
cookie, and its answer says nothing a caller without the URL could use, so a web app's page can PUT a
file straight to the URL its back end presigned (the point of presigned uploads). The rest of the API
answers the origins of CLIPTEXT_CORS_ORIGINS only (none by default): a page that calls it holds an API
key in the browser, which an operator allows knowingly.
"""

from __future__ import annotations

import re

from flask import Flask, Response, request
from flask_cors import CORS

SIGNED_UPLOAD_PATH = r"^/v1/uploads/[^/]+/content$"
API_PATHS = r"^/v1/.*$"
# what a page may send besides the simple headers: the key, JSON or a file's type, and our own; and what
# OpenAI's JavaScript SDK (dangerouslyAllowBrowser) adds to every request, which the API ignores: its
# X-Stainless-* platform and retry headers, User-Agent (Firefox lists it in a preflight) and the
# organization and project when set. Without them its preflight failed: the OpenAI-compatible
# endpoints were out of a page's reach.
ALLOWED_HEADERS: tuple[str | re.Pattern[str], ...] = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-Id",
    re.compile(r"X-Stainless-[A-Za-z0-9-]+\Z", re.IGNORECASE),
    "User-Agent",
    "OpenAI-Organization",
    "OpenAI-Project",
)
# what a page may read of an answer besides the simple headers: ids to quote, limits and waits, a replay
EXPOSED_HEADERS = (
    "X-Request-Id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "Location",
    # "false" on the OpenAI endpoint's 504 (the transcription goes on): unreadable, OpenAI's SDK retried
    # the 504 and sent the file again, twice
    "x-should-retry",
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
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
        app.after_request(_vary_on_origin)  # registered first, so it runs after flask-cors's hook
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


_SIGNED_UPLOAD = re.compile(SIGNED_UPLOAD_PATH)
_API = re.compile(API_PATHS)


def _vary_on_origin(response: Response) -> Response:
    """Say `Vary: Origin` on every API answer, those without CORS headers too (no Origin, another one).

    flask-cors says it only on answers it adds CORS headers to, so a shared or browser cache could keep
    an answer fetched without Origin (the docs' assets, public for a day) and hand it to a page, which
    then lacks Access-Control-Allow-Origin. The signed upload URL answers '*' to all: nothing varies."""
    path = request.path
    if _API.match(path) and not _SIGNED_UPLOAD.match(path):
        varies = {v.strip().lower() for value in response.headers.getlist("Vary") for v in value.split(",")}
        if "origin" not in varies and "*" not in varies:
            response.headers.add("Vary", "Origin")
    return response
