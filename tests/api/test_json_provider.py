"""api/json_provider.py: orjson gives the JSON Flask's default provider gives, and takes what it takes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from api.json_provider import OrjsonProvider, dump_bytes


@dataclasses.dataclass
class Point:
    x: int
    label: str


VALUES = [
    {"b": 1, "a": [1.5, None, True], "é": "naïve ☃"},
    {"when": dt.datetime(2026, 11, 26, 7, 30, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2)},
    {"amount": decimal.Decimal("1.10"), "id": uuid.UUID(int=7), "point": Point(3, "p")},
    {2: "int keys", 10: {"y": {"x": []}}},
    {"huge": 2**80, "small": -(2**70)},
    ["", '\u0000\u001f"\\', 0.1, 1e300, -0.0],
]


@pytest.mark.parametrize("value", VALUES)
def test_the_same_json_value_as_flasks_default_provider(value):
    reference = DefaultJSONProvider(Flask("reference"))
    ours = dump_bytes(value)
    assert json.loads(ours) == json.loads(reference.dumps(value))
    assert ours.decode() == json.dumps(
        json.loads(ours), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


def test_a_type_neither_knows_is_a_type_error():
    with pytest.raises(TypeError):
        dump_bytes({"x": object()})


def test_responses_keep_flasks_shape():
    app = Flask("t")
    app.json = OrjsonProvider(app)
    with app.app_context():
        response = app.json.response({"b": 2, "a": "ü"})
    assert response.mimetype == "application/json"
    assert response.get_data() == '{"a":"ü","b":2}\n'.encode()
    app.debug = True
    with app.app_context():
        assert app.json.response([1]).get_data() == b"[\n  1\n]\n"


def test_loads_refuses_what_is_not_json():
    provider = OrjsonProvider(Flask("t"))
    assert provider.loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    with pytest.raises(ValueError):
        provider.loads("{'a': 1}")


def test_the_api_answers_through_it(client, new_org):
    _, headers = new_org()
    assert isinstance(client.application.json, OrjsonProvider)
    bad = client.post(
        "/v1/transcriptions", data=b'{"upload_id": ', headers=headers, content_type="application/json"
    )
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]) == {"code", "message", "details"}
    listed = client.get("/v1/transcriptions", headers=headers)
    assert listed.status_code == 200
    assert listed.get_data().endswith(b"}\n")
    assert listed.get_json() == {"data": [], "has_more": False}


def test_what_orjson_refuses_still_goes_out_as_valid_json():
    lone = dump_bytes({"name": "a\ud800b", "n": 2**70})
    assert json.loads(lone) == {"name": "a\ud800b", "n": 2**70}
    assert b"\\ud800" in lone  # an escape: the body itself stays valid UTF-8


def test_parsing_is_the_stdlibs():
    provider = OrjsonProvider(Flask("t"))
    assert provider.loads("-99999999999999999999") == -99999999999999999999  # exact, not a float
    assert provider.loads('{"a": 1}'.encode("utf-16")) == {"a": 1}


def test_the_openapi_document_keeps_its_order(client):
    """flask-smorest asks for sort_keys=False: paths and fields stay in the order the code declares."""
    body = client.get("/v1/openapi.json").get_data(as_text=True)
    document = json.loads(body)
    assert body == json.dumps(document, indent=2, sort_keys=False)
    paths = list(document["paths"])
    assert paths != sorted(paths)
    assert list(document["components"]["schemas"]["Transcription"]["properties"])[0] == "id"
