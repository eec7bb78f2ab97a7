"""The compiled dump of response schemas (api.schemas.common.ResponseSchema) writes what marshmallow would."""

from __future__ import annotations

import datetime as dt

import marshmallow as ma
import pytest

from api.models import Transcription
from api.schemas.common import ResponseSchema, UTCDateTime
from api.schemas.transcriptions import TranscriptionListSchema, TranscriptionSchema

WORDS = [{"start": 0.0, "end": 0.4, "word": " And", "probability": 0.9}]


def transcription(**fields) -> Transcription:
    row = Transcription(
        id=7,
        public_id="txn_x",
        upload=3,
        status="completed",
        text=" And so",
        duration=11.0,
        language="en",
        progress=None,
        options={"language": "en", "prompt": None, "word_timestamps": True},
        webhook_url=None,
        created_at=dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
        started_at=dt.datetime(2024, 5, 1, 12, 0, 1),
        completed_at=dt.datetime(2024, 5, 1, 12, 0, 9, tzinfo=dt.UTC),
        **fields,
    )
    row.upload_public_id = "upl_y"
    row.segment_list = [
        {"start": 0, "end": 2.5, "text": " And so", "words": WORDS},  # an int start: written as a float
        {"start": 2.5, "end": 4.0, "text": " my", "words": None},
    ]
    return row


def failed() -> Transcription:
    row = transcription(error_code="AUDIO_DECODE_ERROR", error_message=None)
    row.status, row.upload_id, row.segment_list = "failed", None, []
    return row


@pytest.mark.parametrize("make", [transcription, failed])
def test_transcription_dump_is_marshmallows(make):
    schema, row = TranscriptionSchema(), make()
    compiled = schema.dump(row)
    assert compiled == ma.Schema.dump(schema, row)
    assert list(compiled) == list(ma.Schema.dump(schema, row))  # same keys, same order
    assert all(isinstance(segment["start"], float) for segment in compiled["segments"])


def test_list_dump_is_marshmallows():
    schema = TranscriptionListSchema()
    page = {"data": [transcription(), failed()], "has_more": True}
    compiled = schema.dump(page)
    assert compiled == ma.Schema.dump(schema, page)
    assert "segments" not in compiled["data"][0]
    assert TranscriptionSchema(many=True).dump([failed()]) == ma.Schema.dump(
        TranscriptionSchema(many=True), [failed()]
    )


def test_missing_values_defaults_data_keys_and_hooks():
    class Item(ResponseSchema):
        renamed = ma.fields.String(data_key="name", attribute="title")
        absent = ma.fields.Integer()
        defaulted = ma.fields.String(dump_default=lambda: "d")
        nested = ma.fields.Nested(lambda: Item(only=("renamed",)), allow_none=True)
        at = UTCDateTime()

    class Hooked(Item):
        @ma.post_dump
        def mark(self, data, **kwargs):
            return {**data, "hooked": True}

    item = {"title": "t", "nested": {"title": "u"}, "at": dt.datetime(2024, 1, 1)}
    for schema in (Item(), Hooked()):
        assert schema.dump(item) == ma.Schema.dump(schema, item)
    assert Hooked().dump(item)["hooked"] is True
    assert Item().dump(item) == {
        "name": "t",
        "defaulted": "d",
        "nested": {"name": "u"},
        "at": "2024-01-01T00:00:00Z",
    }


def test_rows_read_for_answers_dump_as_models_do(app, new_org):
    """read_transcription / list_page read plain rows; each dumps exactly as the peewee model would."""
    from api.db import db
    from api.services import transcriptions as service
    from tests.seed import completed_upload

    org, _ = new_org("pro")
    with app.app_context(), db.connection_context():
        upload = completed_upload(org)
        done = Transcription.create(
            organization=org,
            upload=upload,
            status="completed",
            text=" And so",
            duration=11.5,
            language="en",
            progress=1.0,
            options={"language": "en", "prompt": "ünïcode", "word_timestamps": True},
            webhook_url="https://example.com/hook",
            started_at=dt.datetime(2024, 5, 1, 12, 0, 1, 250000),
            completed_at=dt.datetime(2024, 5, 1, 12, 0, 9),
        )
        failed = Transcription.create(
            organization=org, upload=None, status="failed", error_code="AUDIO_DECODE_ERROR", error_message="x"
        )
        schema, summary = TranscriptionSchema(), TranscriptionListSchema()
        for made in (done, failed):
            row = service.read_transcription(org, made.public_id)
            model = service.get_transcription(org, made.public_id)
            row.segment_list = model.segment_list = service.segment_items(model)
            assert schema.dump(row) == ma.Schema.dump(schema, model)
            assert (row.id, row.organization_id) == (model.id, model.organization_id)
        page = service.list_page(org, 10)
        models = [service.get_transcription(org, row.public_id) for row in page.data]
        assert [row.public_id for row in page.data] == [failed.public_id, done.public_id]
        assert summary.dump({"data": page.data, "has_more": False}) == ma.Schema.dump(
            summary, {"data": models, "has_more": False}
        )
