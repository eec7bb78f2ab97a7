"""OpenAI's shapes: the transcription request form, verbose_json, the model list and the error body.

They document /v1/audio/transcriptions and /v1/models (and the verbose_json format of
GET /v1/transcriptions/{id}); the bodies themselves are built in api.formats and api.openai_compat.
"""

from __future__ import annotations

import marshmallow as ma

from api.formats import FORMATS, GRANULARITIES
from api.schemas.common import LANGUAGE_CODE, FullMatch


class OpenAITranscriptionFormSchema(ma.Schema):
    """multipart/form-data fields of POST /v1/audio/transcriptions (besides the `file` part)."""

    class Meta:
        unknown = ma.EXCLUDE  # OpenAI SDKs send fields we do not use (stream, chunking_strategy, …)

    model = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(r"\S", error="Name a model (any name: the loaded model is used)."),
        metadata={"description": "Any name: the loaded model is used"},
    )
    language = ma.fields.String(
        load_default=None,
        validate=FullMatch(LANGUAGE_CODE, error="Not a language code."),
    )
    # any length, as OpenAI takes it: clients pass the transcript so far; its tail is kept
    # (api.blueprints.openai.prompt_tail), about what the model reads (the last 223 tokens) anyway
    prompt = ma.fields.String(load_default=None)
    response_format = ma.fields.String(load_default="json", validate=ma.validate.OneOf(FORMATS))
    temperature = ma.fields.Float(
        load_default=0.0,
        validate=ma.validate.Range(min=0, max=1),
        metadata={"description": "Accepted for compatibility; decoding uses the temperature fallback"},
    )
    timestamp_granularities = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(GRANULARITIES)),
        data_key="timestamp_granularities[]",
        load_default=lambda: ["segment"],
    )
    # refused when true (api.blueprints.openai): the SDK would wait for server-sent events and hand back
    # an empty stream, the transcript silently lost
    stream = ma.fields.Boolean(load_default=False)


class VerboseSegmentSchema(ma.Schema):
    id = ma.fields.Integer()
    seek = ma.fields.Integer()
    start = ma.fields.Float()
    end = ma.fields.Float()
    text = ma.fields.String()
    tokens = ma.fields.List(ma.fields.Integer())
    temperature = ma.fields.Float()
    avg_logprob = ma.fields.Float()
    compression_ratio = ma.fields.Float()
    no_speech_prob = ma.fields.Float()


class VerboseWordSchema(ma.Schema):
    word = ma.fields.String()
    start = ma.fields.Float()
    end = ma.fields.Float()


class UsageSchema(ma.Schema):
    """OpenAI's usage of a model billed by the audio's length."""

    type = ma.fields.String(metadata={"example": "duration"})
    seconds = ma.fields.Float()


class VerboseTranscriptionSchema(ma.Schema):
    """OpenAI's verbose_json: `segments` when the segment granularity is asked, `words` for word."""

    task = ma.fields.String(metadata={"example": "transcribe"})
    language = ma.fields.String()
    duration = ma.fields.Float()
    text = ma.fields.String()
    segments = ma.fields.List(ma.fields.Nested(VerboseSegmentSchema))
    words = ma.fields.List(ma.fields.Nested(VerboseWordSchema))
    usage = ma.fields.Nested(UsageSchema)


class OpenAITextSchema(ma.Schema):
    """response_format=json: the text, and the usage."""

    text = ma.fields.String()
    usage = ma.fields.Nested(UsageSchema)


class ModelSchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "whisper-tiny.en"})
    object = ma.fields.String(metadata={"example": "model"})
    created = ma.fields.Integer()
    owned_by = ma.fields.String(metadata={"example": "cliptext"})


class ModelListSchema(ma.Schema):
    object = ma.fields.String(metadata={"example": "list"})
    data = ma.fields.List(ma.fields.Nested(ModelSchema))


class OpenAIErrorBodySchema(ma.Schema):
    message = ma.fields.String()
    type = ma.fields.String(metadata={"example": "invalid_request_error"})
    param = ma.fields.String(allow_none=True)
    code = ma.fields.String(allow_none=True)


class OpenAIErrorSchema(ma.Schema):
    """{"error": {"message", "type", "param", "code"}} (OpenAI endpoints only)."""

    error = ma.fields.Nested(OpenAIErrorBodySchema)
