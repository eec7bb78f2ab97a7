"""GET /v1/docs works with no way out to the internet: the page and every file it loads come from the
API itself. It loaded ReDoc from a CDN (unpinned), a blank page on an air-gapped host."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest


def _get(client, url: str, **kwargs):
    """The answer, its body read and the file it streamed from closed."""
    response = client.get(url, **kwargs)
    response.get_data()
    response.close()
    return response


def _loaded(page: str) -> list[str]:
    """The URLs of the page's scripts, stylesheets and icons."""
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_the_page_loads_only_files_of_this_server(client) -> None:
    page = _get(client, "/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    urls = _loaded(page.get_data(as_text=True))
    assert urls, "the page loads nothing"
    for url in urls:
        assert "//" not in url, f"{url} is not this server's"
        served = _get(client, urljoin("/v1/docs", url))
        assert served.status_code == 200, url
        assert len(served.data) > 100, url
        assert served.headers["Cache-Control"].startswith("public, max-age="), url


def test_the_page_reads_this_servers_openapi_document(client) -> None:
    script = _get(client, "/v1/docs/assets/init.js").get_data(as_text=True)
    assert 'url: "openapi.json"' in script  # relative to /v1/docs: /v1/openapi.json
    assert "validatorUrl: null" in script  # Swagger UI's default sends the spec's URL to swagger.io
    assert client.get(urljoin("/v1/docs", "openapi.json")).get_json()["openapi"] == "3.1.0"
    bundle = _get(client, "/v1/docs/assets/swagger-ui-bundle.js")
    assert bundle.mimetype in ("text/javascript", "application/javascript")
    assert b"SwaggerUIBundle" in bundle.data


def test_the_pages_policy_allows_scripts_from_this_server_only(client) -> None:
    policy = _get(client, "/v1/docs").headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "http" not in policy and "unsafe-eval" not in policy


@pytest.mark.parametrize(
    "name",
    ["swagger-editor-bundle.js", "LICENSE", "..%2F..%2Fapi%2F__init__.py", "index.html", "nothing.js"],
)
def test_no_other_file_is_served(client, name: str) -> None:
    response = client.get(f"/v1/docs/assets/{name}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_the_page_needs_no_key(client) -> None:
    for path in ("/v1/docs", "/v1/docs/assets/init.js", "/v1/openapi.json"):
        assert _get(client, path, headers={"Authorization": "Bearer wrong"}).status_code == 200, path
