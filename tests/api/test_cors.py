"""Browsers (CORS): a web app's page PUTs a file to the URL its back end presigned, from any origin;
the rest of the API answers the origins of CLIPTEXT_CORS_ORIGINS only, errors included.

With no CORS headers at all, a browser refused every answer: presigned uploads, whose point is that the
browser sends the file straight to storage, could not be used from a web page.
"""

from __future__ import annotations

import pytest

from cliptext.settings import Settings, SettingsError
from tests.api.helpers import JFK_MP3, local_path, presign

APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"


def preflight(client, path: str, origin: str, method: str, headers: str):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_a_page_of_any_origin_puts_a_file_to_its_presigned_url(client, new_org):
    _, owner = new_org("pro")
    data = JFK_MP3.read_bytes()
    upload = presign(client, owner, data)
    path = local_path(upload["url"])

    answer = preflight(client, path, OTHER_ORIGIN, "PUT", "content-type")
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "PUT" in answer.headers["Access-Control-Allow-Methods"]
    assert "content-type" in answer.headers["Access-Control-Allow-Headers"].lower()

    put = client.put(path, data=data, headers={**upload["headers"], "Origin": OTHER_ORIGIN})
    assert put.status_code == 200, put.get_json()
    assert put.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Request-Id" in put.headers["Access-Control-Expose-Headers"]


def test_the_api_answers_no_origin_by_default(client, new_org):
    _, owner = new_org("pro")
    answer = preflight(client, "/v1/transcriptions", APP_ORIGIN, "POST", "authorization,content-type")
    assert "Access-Control-Allow-Origin" not in answer.headers
    listed = client.get("/v1/transcriptions", headers={**owner, "Origin": APP_ORIGIN})
    assert listed.status_code == 200
    assert "Access-Control-Allow-Origin" not in listed.headers


def test_the_api_answers_the_configured_origins(make_app, new_org):
    app = make_app(cors_origins=(APP_ORIGIN,))
    client = app.test_client()
    with app.app_context():
        from api.services.orgs import create_org

        _, _, raw = create_org("Org cors", "owner-cors@example.com", "free")
    key = {"Authorization": f"Bearer {raw}"}

    answer = preflight(client, "/v1/transcriptions", APP_ORIGIN, "POST", "authorization,idempotency-key")
    assert answer.status_code == 200  # no key needed to ask
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "idempotency-key" in allowed
    assert answer.headers["Access-Control-Max-Age"] == "600"
    # every method the API has: PATCH (a member's role) was missing, so a page could not send it
    for method in ("GET", "POST", "PATCH", "DELETE"):
        asked = preflight(client, "/v1/orgs/org_x/members/usr_x", APP_ORIGIN, method, "authorization")
        assert method in asked.headers.get("Access-Control-Allow-Methods", ""), method

    listed = client.get("/v1/transcriptions", headers={**key, "Origin": APP_ORIGIN})
    assert listed.status_code == 200
    assert listed.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = listed.headers["Access-Control-Expose-Headers"]
    assert "RateLimit-Remaining" in exposed and "X-Request-Id" in exposed
    assert "Access-Control-Allow-Credentials" not in listed.headers

    refused = client.get("/v1/transcriptions", headers={"Authorization": "Bearer nope", "Origin": APP_ORIGIN})
    assert refused.status_code == 401  # the page can read why: the envelope carries the header too
    assert refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert refused.get_json()["error"]["code"] == "UNAUTHORIZED"

    stranger = client.get("/v1/transcriptions", headers={**key, "Origin": OTHER_ORIGIN})
    assert "Access-Control-Allow-Origin" not in stranger.headers


@pytest.mark.parametrize(
    "value",
    ["https://app.example.com/", "app.example.com", "https://app.example.com/path", "ftp://x.example"],
)
def test_an_origin_that_no_browser_sends_is_refused_at_start(monkeypatch, value):
    monkeypatch.setenv("CLIPTEXT_CORS_ORIGINS", f"http://localhost:3000,{value}")
    with pytest.raises(SettingsError, match="CLIPTEXT_CORS_ORIGINS"):
        Settings.from_env()


def test_origins_are_read_as_browsers_send_them(monkeypatch):
    monkeypatch.setenv(
        "CLIPTEXT_CORS_ORIGINS", " HTTPS://App.Example.com:443 , http://localhost:3000,http://[::1]:80,*"
    )
    assert Settings.from_env().cors_origins == (
        "https://app.example.com",
        "http://localhost:3000",
        "http://[::1]",
        "*",
    )
