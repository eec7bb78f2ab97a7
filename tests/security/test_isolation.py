"""Organization isolation: every endpoint, given another organization's ids, answers 404 and leaks nothing.

The endpoints are read from the app's url_map and OpenAPI document, so an endpoint added later is in the
matrix without editing this file; an id parameter this file cannot fill makes the test fail loudly.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from api.models import ApiKey, Membership, Organization, Segment, Transcription, Upload, utcnow
from tests.media import AUDIO_DIR

JFK_MP3 = AUDIO_DIR / "jfk.mp3"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
# path parameters that name something every organization shares (the loaded model), not A's data
SHARED_RESOURCES = {"model_id"}
SECRET_TEXT = "the launch codes are 0000"
SECRET_NAME = "Very Secret Org A"
SECRET_FILENAME = "board-meeting-secret.mp3"


def seed_org_a(app, new_org) -> dict[str, Any]:
    """Organization A with a completed transcription (segments), a completed and a pending upload."""
    org, raw = new_org("enterprise", custom_rate_limit=100_000)
    with app.app_context():
        org.name = SECRET_NAME
        org.save()

        def upload(status: str, suffix: str) -> Upload:
            return Upload.create(
                organization=org,
                filename=SECRET_FILENAME,
                content_type="audio/mpeg",
                declared_size=10,
                storage_key=f"uploads/{org.public_id}/{suffix}",
                status=status,
                expires_at=utcnow().replace(year=utcnow().year + 1),
                completed_at=utcnow() if status == "completed" else None,
                duration=3.0 if status == "completed" else None,
            )

        completed, pending = upload("completed", "done"), upload("pending", "pend")
        txn = Transcription.create(
            organization=org,
            upload=completed,
            status="completed",
            text=SECRET_TEXT,
            duration=3.0,
            language="en",
            webhook_url="https://hooks.example.com/secret-a",
        )
        Segment.create(transcription=txn, index=0, start=0.0, end=2.0, text=SECRET_TEXT)
        key = ApiKey.select(ApiKey, Membership).join(Membership).where(Membership.organization == org).get()
        owner_id = key.membership.user.public_id
    return {
        "org": org,
        "key": raw,
        "ids": {
            "org_id": [org.public_id],
            "transcription_id": [txn.public_id],
            "upload_id": [completed.public_id, pending.public_id],
            "key_id": [key.public_id],
            "member_id": [owner_id],
        },
        "secrets": [SECRET_TEXT, SECRET_NAME, SECRET_FILENAME, "secret-a", org.webhook_secret],
    }


def id_kind(name: str) -> str:
    """Which of A's resources an id-like parameter names (`starting_after` is a transcription cursor)."""
    if name == "starting_after":
        return "transcription_id"
    if name.endswith("_id"):
        return name
    raise AssertionError(f"not an id parameter: {name}")


def is_id(name: str) -> bool:
    return name == "starting_after" or name.endswith("_id")


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def filler(name: str, schema: dict) -> Any:
    """A valid value for a required non-id field of a request body."""
    if schema.get("format") == "email" or name == "email":
        return "spy@example.com"
    if schema.get("enum"):  # a role: a valid one, so that the ids decide the answer
        return schema["enum"][0]
    kind = schema.get("type")
    return {"integer": 1, "number": 1.0, "boolean": False, "array": [], "object": {}}.get(kind, "x.mp3")


def attempts(app, spec: dict, ids: dict[str, list[str]]) -> list[tuple[str, str, dict, dict | None]]:
    """(method, url, query, json body) for every endpoint x every way it takes one of A's ids."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/") or rule.endpoint.startswith(("api-docs.", "docs.")):
            continue
        openapi_path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - IGNORED_METHODS):
            operation = spec["paths"].get(openapi_path, {}).get(method.lower(), {})
            path_args = sorted(rule.arguments)
            if path_args and set(path_args) <= SHARED_RESOURCES:
                continue  # the same for every organization: nothing of A's to reach
            unknown = [a for a in path_args if id_kind(a) not in ids]
            assert not unknown, f"{rule.rule}: teach this test which resource {unknown} names"
            # every combination of path ids (A's), nothing in the body
            combos: list[dict[str, str]] = [{}]
            for arg in path_args:
                combos = [{**c, arg: value} for c in combos for value in ids[id_kind(arg)]]
            body_schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            )
            body_fields = resolve(spec, body_schema) if body_schema else {}
            properties = body_fields.get("properties", {})
            required = set(body_fields.get("required", []))
            body_ids = [name for name in properties if is_id(name)]
            base_body = {
                name: filler(name, resolve(spec, properties[name])) for name in required if not is_id(name)
            }
            query_ids = [
                p["name"]
                for p in operation.get("parameters", [])
                if p.get("in") == "query" and is_id(p["name"])
            ]
            ok = next((r for code, r in operation.get("responses", {}).items() if code.startswith("2")), {})
            accepts = [t for t in ok.get("content", {}) if t != "application/json"]
            for combo in combos:
                url = rule.rule
                for arg, value in combo.items():
                    url = re.sub(rf"<(?:[a-z]+:)?{arg}>", value, url)
                if path_args:
                    found.append((method, url, {}, dict(base_body) if properties else None))
                    for accept in accepts:  # every documented representation (text, subtitles...)
                        found.append(
                            (method, url, {"_accept": accept}, dict(base_body) if properties else None)
                        )
                for name in body_ids:
                    for value in ids[id_kind(name)]:
                        found.append((method, url, {}, {**base_body, name: value}))
                for name in query_ids:
                    for value in ids[id_kind(name)]:
                        found.append((method, url, {name: value}, dict(base_body) if properties else None))
    return found


def test_cross_organization_matrix(app, client, new_org):
    a = seed_org_a(app, new_org)
    org_b, key_b = new_org("enterprise", custom_rate_limit=100_000)
    b = {"Authorization": f"Bearer {key_b}"}
    spec = client.get("/v1/openapi.json").get_json()
    matrix = attempts(app, spec, a["ids"])
    every_a_id = [v for values in a["ids"].values() for v in values]
    tried_endpoints = {(m, re.sub(r"(txn|upl|org)_[A-Za-z0-9]+", "{id}", u)) for m, u, _, _ in matrix}
    assert len(tried_endpoints) >= 7, tried_endpoints

    for method, url, query, body in matrix:
        query = dict(query)
        accept = query.pop("_accept", "application/json")
        response = client.open(
            url, method=method, query_string=query, json=body, headers={**b, "Accept": accept}
        )
        where = f"{method} {url} {query} {body}"
        text = response.get_data(as_text=True)
        sent = f"{url} {query} {body}"
        if url.endswith("/content"):  # authorised by a signature, not a key: B has none for A's upload
            assert response.status_code == 403, where
        elif "starting_after" in query and "/orgs/" not in url:  # a cursor not yours is a bad parameter
            assert response.status_code == 422, where  # (under another organization's path: its 404)
        else:
            assert response.status_code == 404, (where, text)
        assert response.get_json()["error"]["code"] in {"NOT_FOUND", "FORBIDDEN", "VALIDATION_ERROR"}
        for secret in a["secrets"] + [i for i in every_a_id if i not in sent]:
            assert secret not in text, (where, secret)

    # and A still has all of it, untouched
    a_headers = {"Authorization": f"Bearer {a['key']}"}
    txn_id = a["ids"]["transcription_id"][0]
    assert client.get(f"/v1/transcriptions/{txn_id}", headers=a_headers).get_json()["text"] == SECRET_TEXT
    with app.app_context():
        statuses = sorted(u.status for u in Upload.select().where(Upload.organization == a["org"]))
        assert statuses == ["completed", "pending"]
        assert Membership.select().where(Membership.organization == a["org"]).count() == 1
        # B's POST .../webhook-secret/rotate with A's id replaced nothing
        org_a = Organization.get_by_id(a["org"].id)
        assert org_a.webhook_secret == a["org"].webhook_secret and org_a.webhook_secret_previous is None
        assert Transcription.select().where(Transcription.organization == org_b).count() == 0
    listing = client.get("/v1/transcriptions", headers=b).get_json()
    assert listing == {"data": [], "has_more": False}
    assert [o["id"] for o in client.get("/v1/orgs", headers=b).get_json()["data"]] == [org_b.public_id]


@pytest.mark.skipif(not JFK_MP3.exists(), reason="reference audio not available")
def test_signature_of_one_upload_does_not_open_another(app, client, new_org):
    """B's valid upload URL, pointed at A's pending upload id, is refused and writes nothing."""
    a = seed_org_a(app, new_org)
    _, key_b = new_org("pro")
    presigned = client.post(
        "/v1/uploads/presigned",
        json={"filename": "b.mp3", "content_type": "audio/mpeg", "size": 5},
        headers={"Authorization": f"Bearer {key_b}"},
    ).get_json()
    signature = presigned["url"].split("signature=", 1)[1]
    pending_a = a["ids"]["upload_id"][1]
    response = client.put(f"/v1/uploads/{pending_a}/content?signature={signature}", data=b"12345")
    assert response.status_code == 403
    with app.app_context():
        assert Upload.get(Upload.public_id == pending_a).status == "pending"
