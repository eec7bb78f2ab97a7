"""The error envelope everywhere, request ids and security headers, rate limits across app instances, 503."""

from __future__ import annotations

import threading

import pytest

from api.errors import ErrorSchema
from tests.api.helpers import JFK_MP3, upload_file

ENVELOPE = ErrorSchema()


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert ENVELOPE.validate(body) == {}
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def test_framework_errors_use_the_envelope(client, new_org):
    _, headers = new_org("pro")
    assert_envelope(client.get("/v1/nothing-here"), 404, "NOT_FOUND")
    assert_envelope(client.get("/nowhere", headers=headers), 404, "NOT_FOUND")
    response = client.patch("/v1/transcriptions", headers=headers)
    error = assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "POST" in error["details"]["allowed"]
    assert_envelope(client.get("/v1/transcriptions"), 401, "UNAUTHORIZED")


def test_internal_error_has_request_id_and_no_trace(make_app, new_org):
    app = make_app()

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    app.view_functions["boom"].view_class = type("Public", (), {"public": True})
    client = app.test_client()
    response = client.get("/v1/boom", headers={"X-Request-Id": "req-42"})
    error = assert_envelope(response, 500, "INTERNAL")
    assert error["details"] == {"request_id": "req-42"} and "req-42" in error["message"]
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(
        as_text=True
    )
    assert response.headers["X-Request-Id"] == "req-42"


def test_request_id_and_security_headers(client, new_org):
    _, headers = new_org("pro")
    generated = client.get("/v1/transcriptions", headers=headers)
    assert len(generated.headers["X-Request-Id"]) == 32
    echoed = client.get("/v1/transcriptions", headers={**headers, "X-Request-Id": "abc.123"})
    assert echoed.headers["X-Request-Id"] == "abc.123"
    hostile = client.get("/v1/health", headers={"X-Request-Id": "bad id <script>"})
    assert hostile.headers["X-Request-Id"] != "bad id <script>"
    for response in (generated, client.get("/v1/nothing"), client.get("/v1/health")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert "X-Request-Id" in response.headers


def test_health_and_docs(client):
    health = client.get("/v1/health")
    assert health.status_code == 200
    assert health.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}
    docs = client.get("/v1/docs")
    docs.get_data()
    docs.close()
    assert docs.status_code == 200 and b"swagger-ui" in docs.data.lower()


def test_openapi_documents_every_error_with_the_envelope(client):
    spec = client.get("/v1/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["components"]["schemas"]["Error"]["properties"]["error"]["$ref"].endswith("/ErrorBody")
    paths = spec["paths"]
    assert {
        "/v1/uploads/presigned",
        "/v1/uploads/complete",
        "/v1/transcriptions",
        "/v1/transcriptions/{transcription_id}",
        "/v1/orgs",
        "/v1/orgs/{org_id}",
        "/v1/orgs/{org_id}/members",
        "/v1/health",
    } <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            errors = {
                code: r for code, r in operation["responses"].items() if code.isdigit() and int(code) >= 400
            }
            assert errors, (path, method)
            # the OpenAI-compatible endpoints answer errors in OpenAI's shape, by design
            openai_style = path.startswith(("/v1/audio/", "/v1/models"))
            expected = "#/components/schemas/" + ("OpenAIError" if openai_style else "Error")
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]["$ref"]
                assert schema == expected, (path, method, code)
            if operation.get("security") != []:
                assert {"401", "429"} <= set(errors), (path, method)
            # every operation reads the database, Redis or storage, any of which may be down
            assert "503" in errors, (path, method)


def test_rate_limit_free_plan_shared_by_two_app_instances(make_app, app, new_org):
    """Two app instances (as two API processes) share the Redis counters: 10/min in all for Free."""
    _, headers = new_org("free")
    clients = [app.test_client(), make_app().test_client()]
    statuses, remaining = [], []
    for i in range(12):
        response = clients[i % 2].get("/v1/transcriptions", headers=headers)
        statuses.append(response.status_code)
        remaining.append(response.headers.get("RateLimit-Remaining"))
        assert response.headers["RateLimit-Limit"] == "10"
        assert 0 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert statuses == [200] * 10 + [429] * 2
    assert remaining[:10] == [str(9 - i) for i in range(10)]
    error = assert_envelope(response, 429, "RATE_LIMITED")
    assert error["details"]["requests_per_minute"] == 10 and "10 per 1 minute" in error["details"]["limit"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # another organization has its own budget
    _, other = new_org("free")
    assert clients[0].get("/v1/transcriptions", headers=other).status_code == 200
    # unauthenticated endpoints are not counted
    assert clients[0].get("/v1/health").status_code == 200


def test_a_counted_request_is_one_redis_round_trip(client, new_org, redis_conn, test_ns):
    """The hit's script also returns the window's expiry, so the RateLimit headers need no GET + TTL."""
    _, headers = new_org("pro")
    assert client.get("/v1/transcriptions", headers=headers).status_code == 200  # script loaded
    commands: list[str] = []
    with redis_conn.monitor() as monitor:

        def listen() -> None:
            for event in monitor.listen():
                if event["command"] == f"ECHO {test_ns}-done":
                    return
                if event.get("client_type") != "lua" and f"{test_ns}:ratelimit" in event["command"]:
                    commands.append(event["command"].split()[0])

        listener = threading.Thread(target=listen)
        listener.start()
        remaining = [
            client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] for _ in range(3)
        ]
        redis_conn.echo(f"{test_ns}-done")  # another connection of the pool: the monitor sees it
        listener.join(10)
    assert not listener.is_alive()
    assert commands == ["EVALSHA"] * 3
    assert remaining == ["58", "57", "56"]


def test_short_limiter_path_counts_as_flask_limiter_would(make_app, new_org, redis_conn, test_ns):
    """api.ratelimit's short path and flask-limiter's own check hit the same counter the same way."""
    from flask_limiter import Limiter

    from api.auth import load_principal

    app = make_app()
    (limiter,) = app.extensions["limiter"]
    _, headers = new_org("pro")
    assert app.test_client().get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "59"
    with app.test_request_context("/v1/transcriptions", headers=headers):
        app.preprocess_request()  # the app's hooks: auth, then the short path (a second hit)
        assert limiter.current_limit.remaining == 58
        load_principal()
        Limiter._check_request_limit(limiter)  # flask-limiter's own check (a third hit)
        assert limiter.current_limit.remaining == 57 and limiter.current_limit.limit.amount == 60
    keys = list(redis_conn.scan_iter(match=f"*{test_ns}:ratelimit*"))
    assert len(keys) == 1 and redis_conn.get(keys[0]) == b"3"


def test_exempt_route_takes_flask_limiters_own_check(make_app, new_org):
    """The short path covers application limits alone: with an exemption flask-limiter's check decides."""
    app = make_app()
    (limiter,) = app.extensions["limiter"]

    @app.get("/v1/exempt")
    @limiter.exempt
    def exempt():
        return {"ok": True}

    _, headers = new_org("pro")
    client = app.test_client()
    assert all(
        "RateLimit-Remaining" not in client.get("/v1/exempt", headers=headers).headers for _ in range(3)
    )
    assert client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "59"


@pytest.mark.parametrize(
    ("plan", "limits", "expected"), [("pro", {}, 60), ("enterprise", {"custom_rate_limit": 3}, 3)]
)
def test_rate_limit_follows_plan(client, new_org, plan, limits, expected):
    _, headers = new_org(plan, **limits)
    response = client.get("/v1/orgs", headers=headers)
    assert response.headers["RateLimit-Limit"] == str(expected)
    if expected == 3:
        codes = [client.get("/v1/orgs", headers=headers).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_redis_down_is_503(make_app, app, new_org):
    _, headers = new_org("pro")
    broken = make_app(redis_url="redis://127.0.0.1:1/0", MIGRATE_ON_START=False)
    client = broken.test_client()
    error = assert_envelope(client.get("/v1/transcriptions", headers=headers), 503, "SERVICE_UNAVAILABLE")
    assert "request_id" in error["details"]
    health = client.get("/v1/health")
    error = assert_envelope(health, 503, "SERVICE_UNAVAILABLE")
    assert error["details"] == {"database": "ok", "redis": "unavailable"}


def test_redis_restart_is_503_then_counted_again(make_app, new_org, tmp_path):
    """While Redis is down: 503. After a restart (counters gone) the next request is counted, also when
    no request noticed the outage: a connection the restarted server closed is not used for a hit."""
    from tests.reliability.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        _, headers = new_org("pro")
        client = make_app(redis_url=server.url, MIGRATE_ON_START=False).test_client()
        assert client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "59"
        server.stop(kill=True)
        assert_envelope(client.get("/v1/transcriptions", headers=headers), 503, "SERVICE_UNAVAILABLE")
        server.start()
        assert client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "59"
        assert client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "58"
        server.stop(kill=True)
        server.start()
        assert client.get("/v1/transcriptions", headers=headers).headers["RateLimit-Remaining"] == "59"
    finally:
        server.stop(kill=True)


def test_payload_too_large_on_multipart(make_app, new_org):
    app = make_app(max_upload_bytes=50_000)
    from api.services.orgs import create_org

    with app.app_context():
        _, _, raw = create_org("small", "s@example.com", "pro")
    client = app.test_client()
    with open(JFK_MP3, "rb") as handle:
        response = client.post(
            "/v1/transcriptions",
            data={"file": (handle, "jfk.mp3", "audio/mpeg")},
            headers={"Authorization": f"Bearer {raw}"},
        )
    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


def test_cross_organization_matrix(client, new_org, app):
    """Every endpoint given another organization's ids answers 404 and reveals nothing."""
    org_a, a = new_org("enterprise", custom_rate_limit=1000)
    org_b, b = new_org("enterprise", custom_rate_limit=1000)
    upload_a = upload_file(client, a, JFK_MP3)
    txn_a = client.post("/v1/transcriptions", json={"upload_id": upload_a}, headers=a).get_json()["id"]
    pending_a = client.post(
        "/v1/uploads/presigned",
        json={"filename": "x.mp3", "content_type": "audio/mpeg", "size": 5},
        headers=a,
    ).get_json()["id"]

    attempts = [
        ("get", f"/v1/transcriptions/{txn_a}", None),
        ("delete", f"/v1/transcriptions/{txn_a}", None),
        ("post", "/v1/transcriptions", {"upload_id": upload_a}),
        ("post", "/v1/uploads/complete", {"upload_id": upload_a}),
        ("post", "/v1/uploads/complete", {"upload_id": pending_a}),
        ("get", f"/v1/orgs/{org_a.public_id}", None),
        ("post", f"/v1/orgs/{org_a.public_id}/members", {"email": "spy@example.com"}),
    ]
    for method, path, body in attempts:
        response = getattr(client, method)(path, json=body, headers=b)
        error = assert_envelope(response, 404, "NOT_FOUND")
        text = response.get_data(as_text=True)
        assert org_a.public_id not in text and upload_a not in text and txn_a not in text, (method, path)
        assert error["details"] in ({}, {"field": "upload_id"})
    listing = client.get("/v1/transcriptions", headers=b).get_json()
    assert listing == {"data": [], "has_more": False}
    cursor = client.get(f"/v1/transcriptions?starting_after={txn_a}", headers=b)
    assert cursor.status_code == 422
    assert [o["id"] for o in client.get("/v1/orgs", headers=b).get_json()["data"]] == [org_b.public_id]
    # and A still has everything
    assert client.get(f"/v1/transcriptions/{txn_a}", headers=a).status_code == 200
    assert client.post("/v1/uploads/complete", json={"upload_id": upload_a}, headers=a).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        (
            "/v1/uploads/presigned",
            "filename=a.mp3&content_type=audio%2Fmpeg&size=10",
            "application/x-www-form-urlencoded",
        ),
        ("/v1/uploads/complete", "upload_id=upl_x", "text/plain"),
        ("/v1/orgs/{org}/members", '{"email": "a@example.com"}', "text/plain"),
    ],
)
def test_a_json_endpoint_sent_another_body_type_is_415_not_missing_fields(
    client, new_org, path, body, content_type
):
    """webargs reads only JSON: the caller was told the fields it had sent were missing."""
    org, headers = new_org("pro")
    response = client.post(
        path.format(org=org.public_id),
        data=body,
        headers={**headers, "Content-Type": content_type},
    )
    assert response.status_code == 415, response.get_json()
    assert response.get_json()["error"] == {
        "code": "UNSUPPORTED_MEDIA",
        "message": "The body must be JSON (Content-Type: application/json)",
        "details": {"allowed": ["application/json"]},
    }
