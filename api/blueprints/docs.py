"""GET /v1/docs: the API reference page, served whole by this deployment (no CDN).

Swagger UI's files come from the swagger-ui-py package (a pinned dependency), so the page works on a
host with no way out to the internet, and its scripts are this server's own: the page's CSP allows
'self' only. Not part of the OpenAPI document (a page, not an API).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from api.errors import NotFound

PAGE_DIR = Path(__file__).resolve().parent.parent / "docs_page"
_SPEC = importlib.util.find_spec("swagger_ui")  # its folder only: the package's code is not imported
SWAGGER_UI_DIR = Path(_SPEC.submodule_search_locations[0]) / "static"
# the files the page loads, and where each lives; any other name is a 404 (the package holds more)
ASSETS = {
    "swagger-ui-bundle.js": SWAGGER_UI_DIR,
    "swagger-ui.css": SWAGGER_UI_DIR,
    "favicon-32x32.png": SWAGGER_UI_DIR,
    "init.js": PAGE_DIR,
}
ASSET_MAX_AGE = 24 * 3600  # the files change only with a new release

# Swagger UI sets inline styles and draws its icons from data: URLs; everything else is this origin's
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)

blp = Blueprint("docs", __name__, url_prefix="/v1/docs")


@blp.get("")
def page() -> Response:
    response = send_from_directory(PAGE_DIR, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@blp.get("/assets/<name>")
def asset(name: str) -> Response:
    folder = ASSETS.get(name)
    if folder is None:
        raise NotFound("File")
    response = send_from_directory(folder, name, max_age=ASSET_MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE}"
    return response
