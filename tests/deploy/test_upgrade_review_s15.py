"""A rolling upgrade leaves yesterday's Idempotency-Key answers in Redis for up to 24 h, in yesterday's
format: {"state": "done", "fingerprint", "status", "body", "headers"}, with no "created" field and no
"idempotency-of" index naming the transcription they created (api.services.idempotency since fc2ba07).

Today's code promises (docs/deploy.md, deletion and retention) that deleting a transcription turns the
answer its key stored into a tombstone: the prompt and webhook URL leave Redis, and the key answers 409
"deleted". For an answer stored by the release before the upgrade it does neither: the DELETE finds no
index, and a retry with the key replays the 202 naming the deleted transcription, prompt included. The
replay checks the transcription itself (api.services.idempotency._replay).
"""

# ruff: noqa: F811 -- the API tests' fixtures, imported below, are this module's fixtures too

from __future__ import annotations

import json
import secrets

import redis

from api.models import Transcription
from tests.api.conftest import (  # noqa: F401 -- the API tests' fixtures: real database, Redis, app
    app,
    database_url,
    make_app,
    new_org,
    redis_conn,
    test_ns,
)
from tests.api.helpers import JFK_MP3, upload_file

KEY = "created-before-the-upgrade"


def as_stored_before_the_upgrade(redis_conn: redis.Redis, test_ns: str, txn_id: str) -> None:
    """Rewrite the answer under KEY the way yesterday's release stored it: no "created", no index."""
    (answer_key,) = list(redis_conn.scan_iter(match=f"{test_ns}:idempotency:*"))
    record = json.loads(redis_conn.get(answer_key))
    assert record.pop("created") == txn_id
    redis_conn.set(answer_key, json.dumps(record), keepttl=True)
    for index in redis_conn.scan_iter(match=f"{test_ns}:idempotency-of:*"):
        redis_conn.delete(index)


def test_deleting_a_transcription_keyed_before_the_upgrade_tombstones_its_answer(
    make_app, new_org, redis_conn, test_ns
):
    app = make_app()
    _, headers = new_org("pro")
    client, keyed = app.test_client(), {**headers, "Idempotency-Key": KEY}
    prompt = f"customer words {secrets.token_hex(6)}"
    body = {"upload_id": upload_file(client, headers, JFK_MP3), "prompt": prompt}
    created = client.post("/v1/transcriptions", json=body, headers=keyed)
    assert created.status_code == 202, created.get_json()
    txn_id = created.get_json()["id"]
    as_stored_before_the_upgrade(redis_conn, test_ns, txn_id)

    assert client.delete(f"/v1/transcriptions/{txn_id}", headers=headers).status_code == 204

    retry = client.post("/v1/transcriptions", json=body, headers=keyed)
    assert retry.status_code == 409, retry.get_json()
    details = retry.get_json()["error"]["details"]
    assert details["reason"] == "deleted" and details["transcription_id"] == txn_id
    answers = redis_conn.scan_iter(match=f"{test_ns}:idempotency:*")
    assert prompt.encode() not in b"".join(redis_conn.get(key) or b"" for key in answers)
    with app.app_context():
        assert Transcription.select().count() == 0  # not run again either
