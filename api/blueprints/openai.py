"""OpenAI-compatible endpoints: POST /v1/audio/transcriptions and GET /v1/models.

Point an OpenAI client at Cliptext (base_url = https://host/v1, api_key = a Cliptext API key). A
request creates an ordinary transcription (it shows in GET /v1/transcriptions) and waits for it up to
settings.openai_wait_seconds; still running then, it answers 504 `transcription_pending` naming the
transcription to fetch, with `x-should-retry: false` (a 2xx would be read by OpenAI's SDKs as the
transcript, and a retry would transcribe the file again).
While it waits the request holds one gunicorn thread (not a database connection): size the API's
threads for the number of clients waiting at once. Errors use OpenAI's shape here, and only here.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, g, jsonify, request
from flask.views import MethodView

from api import formats
from api.auth import current_principal
from api.blueprints import HEADERS_BY_STATUS, Blueprint
from api.blueprints.uploads import held_upload_slot
from api.errors import ApiError
from api.languages import language_name
from api.models import TranscriptionStatus
from api.openai_errors import install_openai_errors, openai_error
from api.schemas.openai import (
    ModelListSchema,
    ModelSchema,
    OpenAIErrorSchema,
    OpenAITextSchema,
    OpenAITranscriptionFormSchema,
    VerboseTranscriptionSchema,
)
from api.services import models as model_service
from api.services import transcriptions as service
from api.services import uploads as upload_service
from api.services.waiting import wait_until_final
from api.state import state
from cliptext.errors import ErrorCode

blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible transcription API")
install_openai_errors(blp)

_TEXT = {"schema": {"type": "string"}}
_FORM_DOC = {
    "type": "object",
    "required": ["file", "model"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "description": "Any name (e.g. whisper-1): the loaded model answers"},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": list(formats.FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {
            "type": "array",
            "items": {"type": "string", "enum": list(formats.GRANULARITIES)},
            "description": "verbose_json only; `word` asks for word timestamps",
        },
    },
}


def _openai_errors(*statuses: int):
    def decorator(func: Any) -> Any:
        for status in statuses:
            func = blp.alt_response(
                status,
                schema=OpenAIErrorSchema,
                description="OpenAI-style error",
                headers=HEADERS_BY_STATUS.get(status),
            )(func)
        return func

    return decorator


def _invalid(message: str, param: str) -> ApiError:
    return ApiError(ErrorCode.VALIDATION_ERROR, message, {"field": param}, status=400)


# OpenAI's name for its whisper model, which every OpenAI client sends: answers as the loaded model
OPENAI_MODEL_ALIAS = "whisper-1"
# characters of a prompt kept (its end): whisper reads at most the last 223 tokens of it
PROMPT_TAIL = 1000


def prompt_tail(prompt: str | None) -> str | None:
    """The end of an over-long prompt, from a word's start: the words nearest the audio are the ones
    the model reads (a client passing the transcript so far sends ever longer prompts)."""
    if prompt is None or len(prompt) <= PROMPT_TAIL:
        return prompt
    tail = prompt[-PROMPT_TAIL:]
    cut = tail.find(" ")
    return tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail


def _messages(messages: Any) -> str:
    """marshmallow's messages for a field, as text ("Not a valid string."), nested ones included."""
    if isinstance(messages, dict):
        return " ".join(_messages(value) for value in messages.values())
    if isinstance(messages, list | tuple):
        return " ".join(_messages(value) for value in messages)
    return str(messages)


def _form() -> dict[str, Any]:
    form = request.form
    data: dict[str, Any] = form.to_dict()
    grains = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
    data.pop("timestamp_granularities", None)
    if grains:
        data["timestamp_granularities[]"] = grains
    try:
        loaded = OpenAITranscriptionFormSchema().load(data)
    except ma.ValidationError as error:
        field = next(iter(error.messages), "")
        reason = _messages(error.messages[field])
        raise _invalid(f"Invalid value for {field}: {reason}", str(field)) from error
    if loaded.pop("stream"):
        raise _invalid(
            "Streaming (stream=true) is not supported: send stream=false for the whole transcript at once",
            "stream",
        )
    loaded["prompt"] = prompt_tail(loaded["prompt"])
    if "word" in loaded["timestamp_granularities"] and loaded["response_format"] != "verbose_json":
        raise _invalid(
            "timestamp_granularities[] needs response_format=verbose_json", "timestamp_granularities[]"
        )
    return loaded


def _answer(row, form: dict[str, Any]) -> Response:
    fmt = form["response_format"]
    usage = {"type": "duration", "seconds": round(row.duration or 0.0, 3)}  # what OpenAI bills
    if fmt == "json":
        return jsonify({"text": (row.text or "").strip(), "usage": usage})
    segments = service.segments_of(row)
    if fmt == "verbose_json":
        body = formats.verbose_json(row, segments, form["timestamp_granularities"])
        # OpenAI writes the language's name ("english")
        return jsonify(body | {"language": language_name(row.language), "usage": usage})
    body = {
        "text": lambda: formats.text_body(row),
        "srt": lambda: formats.srt_body(segments),
        "vtt": lambda: formats.vtt_body(segments),
    }[fmt]()
    return Response(body, content_type=formats.content_type(fmt))


def _failed(row) -> Response:
    code = ErrorCode(row.error_code) if row.error_code in ErrorCode.__members__ else ErrorCode.INTERNAL
    status = {ErrorCode.INFERENCE_UNAVAILABLE: 503, ErrorCode.TIMEOUT: 504, ErrorCode.INTERNAL: 500}.get(
        code, 400
    )
    message = row.error_message or "The transcription failed"
    return openai_error(status, f"{message} (transcription {row.public_id})", code.value.lower())


def _still_running(row, public_base_url: str) -> Response:
    """504 naming the transcription, which goes on and can be fetched; not to be sent again."""
    url = f"{public_base_url.rstrip('/')}/v1/transcriptions/{row.public_id}"
    response = openai_error(
        504,
        f"The transcription is still running; fetch it from {url} (do not send the file again)",
        "transcription_pending",
        transcription_id=row.public_id,
        url=url,
    )
    response.headers["Location"] = url
    response.headers["x-should-retry"] = "false"  # OpenAI's SDKs retry a 504 otherwise
    return response


@blp.route("/audio/transcriptions")
class AudioTranscriptions(MethodView):
    takes_file = True  # holds a concurrent-upload slot while its body comes in (api.blueprints.uploads)

    @blp.doc(
        requestBody={"required": True, "content": {"multipart/form-data": {"schema": _FORM_DOC}}},
        responses={
            200: {
                "description": "The transcript in response_format",
                "content": {
                    "application/json": {"schema": {"anyOf": [OpenAITextSchema, VerboseTranscriptionSchema]}},
                    "text/plain": _TEXT,
                    "application/x-subrip": _TEXT,
                    "text/vtt": _TEXT,
                },
            },
        },
    )
    @_openai_errors(400, 401, 413, 415, 429, 500, 503, 504)
    def post(self):
        """Transcribe a file, OpenAI-style (waits for the result)

        Creates an ordinary transcription (listed by GET /v1/transcriptions) and waits for it; a
        `word` granularity creates it with word timestamps. `model` and `temperature` are accepted
        for compatibility: the loaded model decodes with its temperature fallback. The upload counts
        against the plan's concurrent uploads until it is stored (429 with Retry-After at the cap).
        """
        app_state = state()
        org = current_principal().org
        if request.mimetype != "multipart/form-data":
            raise ApiError(
                ErrorCode.UNSUPPORTED_MEDIA, "Send multipart/form-data", {"field": "file"}, status=415
            )
        form = _form()
        file = request.files.get("file")
        if file is None or not file.filename:
            raise _invalid("The `file` part is required", "file")
        options = {
            "language": form["language"],
            "prompt": form["prompt"],
            "word_timestamps": "word" in form["timestamp_granularities"],
        }
        service.check_options(app_state, options)  # before the file is stored
        upload = upload_service.create_from_file(
            app_state, held_upload_slot(), file.filename, file.mimetype, file.stream
        )
        with upload_service.removed_unless_transcribed(app_state, upload):
            row = service.create(app_state, org, upload, options, request_id=g.get("request_id"))
        row = wait_until_final(app_state, org, row.public_id, app_state.settings.openai_wait_seconds)
        if row.status == TranscriptionStatus.COMPLETED:
            return _answer(row, form)
        if row.status in TranscriptionStatus.FINAL:
            return _failed(row)
        return _still_running(row, app_state.settings.public_base_url)


@blp.route("/audio/translations")
class AudioTranslations(MethodView):
    @_openai_errors(400, 401, 429, 503)
    def post(self):
        """Translate a file into English, OpenAI-style: not supported (400)

        Answered so that an OpenAI client learns why, where a 404 read as a wrong base URL.
        """
        current_principal()
        raise _invalid(
            "Translation is not supported: Cliptext transcribes speech in the language it is spoken in"
            " (POST /v1/audio/transcriptions)",
            "model",
        )


def _model_body(model: model_service.LoadedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model_service.OWNED_BY}


@blp.route("/models")
class Models(MethodView):
    @blp.response(200, ModelListSchema)
    @_openai_errors(401, 429, 503)
    def get(self):
        """The loaded model, OpenAI-style"""
        current_principal()
        models = model_service.loaded_models(state().settings)
        return {"object": "list", "data": [_model_body(m) for m in models]}


@blp.route("/models/<string:model_id>")
class ModelById(MethodView):
    @blp.response(200, ModelSchema)
    @_openai_errors(401, 404, 429, 503)
    def get(self, model_id):
        """One model, OpenAI-style"""
        current_principal()
        for model in model_service.loaded_models(state().settings):
            if model.id == model_id:
                return _model_body(model)
            if model_id == OPENAI_MODEL_ALIAS:  # what transcriptions sent as whisper-1 run on
                return _model_body(model) | {"id": OPENAI_MODEL_ALIAS}
        return openai_error(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it",
            "model_not_found",
            "model",
        )
