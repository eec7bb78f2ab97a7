"""/v1/transcriptions: create (JSON with an upload id, or multipart with the file), list, get, delete."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, g, jsonify, request
from flask.views import MethodView
from werkzeug.exceptions import UnprocessableEntity

from api import formats
from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.blueprints.uploads import held_upload_slot
from api.errors import ApiError
from api.schemas.openai import VerboseTranscriptionSchema
from api.schemas.transcriptions import (
    CreateTranscriptionFormSchema,
    CreateTranscriptionSchema,
    FormatQuerySchema,
    ListQuerySchema,
    TranscriptionListSchema,
    TranscriptionSchema,
)
from api.services import transcriptions as service
from api.services import uploads as upload_service
from api.services.idempotency import idempotent
from api.state import state
from cliptext.errors import ErrorCode

blp = Blueprint("transcriptions", __name__, url_prefix="/v1/transcriptions", description="Transcriptions")

_FORM_DOC = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "webhook_url": {"type": "string", "format": "uri"},
        "word_timestamps": {"type": "boolean"},
    },
}


def _load(schema: ma.Schema, data: Any, location: str) -> dict[str, Any]:
    """Validate like @blp.arguments does, so errors come out the same way (422, field by field)."""
    try:
        return schema.load(data)
    except ma.ValidationError as error:
        exc = UnprocessableEntity()
        exc.data = {"messages": {location: error.messages}}
        raise exc from error


_CREATE = CreateTranscriptionSchema()  # schemas built once: a Schema() deep-copies its fields
_CREATE_FORM = CreateTranscriptionFormSchema()


def _with_segments(row):
    row.segment_list = service.segment_items(row)
    return row


@blp.route("")
class Transcriptions(MethodView):
    takes_file = True  # a multipart POST holds a concurrent-upload slot (api.blueprints.uploads)

    @idempotent
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "application/json": {"schema": CreateTranscriptionSchema},
                "multipart/form-data": {"schema": _FORM_DOC},
            },
        },
        parameters=[
            {"in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string"}}
        ],
    )
    @blp.response(202, TranscriptionSchema)
    @errors(blp, 400, 404, 409, 413, 415, 422)
    def post(self):
        """Create a transcription (status `queued`); the work happens in a background job

        A multipart upload counts against the plan's concurrent uploads while its body is received, as
        a presigned one does (429 CONCURRENT_UPLOAD_LIMIT with Retry-After at the cap).

        With an `Idempotency-Key` header, the same request again within 24 h answers the first answer
        (header `Idempotent-Replayed: true`), so a retry never queues a second transcription. 409
        CONFLICT, by `details.reason`: `key_reused` (the key with a different request), `in_progress`
        (its first request still runs: retry after Retry-After), `deleted` (the transcription it
        created was deleted since: send a new key).
        """
        app_state = state()
        org = current_principal().org
        if request.mimetype == "application/json":
            body = _load(_CREATE, request.get_json(silent=False), "json")
            upload = service.upload_for(org, body["upload_id"])
            row = service.create(app_state, org, upload, body, request_id=g.get("request_id"))
        elif request.mimetype == "multipart/form-data":
            body = _load(_CREATE_FORM, request.form.to_dict(), "form")
            file = request.files.get("file")
            if file is None or not file.filename:
                raise ApiError(ErrorCode.VALIDATION_ERROR, "The `file` part is required", {"field": "file"})
            # refused before the file is stored, as create would refuse it after
            service.check_options(app_state, body)
            upload = upload_service.create_from_file(
                app_state, held_upload_slot(), file.filename, file.mimetype, file.stream
            )
            with upload_service.removed_unless_transcribed(app_state, upload):
                row = service.create(app_state, org, upload, body, request_id=g.get("request_id"))
        else:
            raise ApiError(
                ErrorCode.UNSUPPORTED_MEDIA,
                "Send application/json or multipart/form-data",
                {"allowed": ["application/json", "multipart/form-data"]},
                status=415,
            )
        return _with_segments(row)

    # an instance (a class is instantiated per request); unknown parameters refused, as in bodies
    @blp.arguments(ListQuerySchema(), location="query", unknown=ma.RAISE)
    @blp.response(200, TranscriptionListSchema)
    @errors(blp, 422)
    def get(self, query):
        """List transcriptions, newest first (cursor pagination with `starting_after`)"""
        page = service.list_page(
            current_principal().org, query["limit"], query["starting_after"], query["status"]
        )
        return {"data": page.data, "has_more": page.has_more}


_TEXT_DOC = {"schema": {"type": "string"}}
_FORMAT_RESPONSES = {
    200: {
        "description": "The transcription (json), verbose_json, or the transcript as text/SRT/WebVTT",
        "content": {
            "application/json": {"schema": {"anyOf": [TranscriptionSchema, VerboseTranscriptionSchema]}},
            "text/plain": _TEXT_DOC,
            "application/x-subrip": _TEXT_DOC,
            "text/vtt": _TEXT_DOC,
        },
    }
}


_TRANSCRIPTION = TranscriptionSchema()


def _render(row, fmt: str, granularities: list[str]):
    """The transcription in `fmt`: the resource itself for json, else a body built from its segments."""
    if fmt == "json":
        return jsonify(_TRANSCRIPTION.dump(_with_segments(row)))
    formats.require_completed(row, fmt)
    segments = service.segments_of(row)
    if fmt == "verbose_json":
        response = jsonify(formats.verbose_json(row, segments, granularities))
    else:
        body = {
            "text": lambda: formats.text_body(row),
            "srt": lambda: formats.srt_body(segments),
            "vtt": lambda: formats.vtt_body(segments),
        }[fmt]()
        response = Response(body, content_type=formats.content_type(fmt))
    response.headers["Vary"] = "Accept"
    return response


@blp.route("/<string:transcription_id>")
class TranscriptionById(MethodView):
    @blp.arguments(FormatQuerySchema(), location="query", as_kwargs=True, unknown=ma.RAISE)
    @blp.doc(responses=_FORMAT_RESPONSES)
    @errors(blp, 404, 409, 422)
    def get(self, transcription_id, format=None, timestamp_granularities=("segment",)):  # noqa: A002
        """Get a transcription with its segments, or its transcript as text, SRT, WebVTT or verbose_json

        `format` (or the Accept header: text/plain, application/x-subrip, text/vtt) picks the body.
        Transcript formats need a completed transcription (409 otherwise); verbose_json words need
        `word_timestamps: true` at creation (409 otherwise).
        """
        row = service.read_transcription(current_principal().org, transcription_id)
        fmt = formats.negotiate(format, request.accept_mimetypes)
        return _render(row, fmt, list(timestamp_granularities))

    @blp.response(204)
    @errors(blp, 404)
    def delete(self, transcription_id):
        """Delete a transcription: cancels its job, removes audio and transcript for good"""
        row = service.get_transcription(current_principal().org, transcription_id)
        service.delete(state(), row)
        return None
