"""/v1/uploads: presigned URL, the signed local PUT (local storage), completion; and the concurrent-upload
slot that a multipart upload to another endpoint (a view class with `takes_file = True`) holds."""

from __future__ import annotations

import logging

from flask import g, request
from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import HEADERS_BY_STATUS, Blueprint, errors
from api.errors import ErrorSchema
from api.http_hooks import takes_file
from api.models import Upload
from api.schemas.uploads import (
    CompleteRequestSchema,
    PresignRequestSchema,
    PresignResponseSchema,
    UploadSchema,
)
from api.services import uploads as service
from api.services.idempotency import idempotent
from api.state import state

log = logging.getLogger(__name__)

blp = Blueprint("uploads", __name__, url_prefix="/v1/uploads", description="Upload audio/video files")

# every 503 carries Retry-After; presign's own (its reservation lock busy) is documented here
_RETRY_AFTER_503 = {"Retry-After": HEADERS_BY_STATUS[429]["Retry-After"]}


def hold_upload_slot() -> None:
    """before_request hook (create_app), after authentication and the rate limit and before anything
    reads the body (refuse_unstorable_input parses the form): a multipart upload holds one of the plan's
    concurrent-upload slots while its body comes in, as a presigned one does; at the cap it is refused
    with the body unread."""
    if request.method != "POST" or request.mimetype != "multipart/form-data":
        return
    if takes_file():
        app_state = state()
        g.upload_slot = service.reserve_file_slot(app_state, current_principal().org)
        app_state.slot_leases.hold(g.upload_slot.id)  # renewed while this request runs


def release_upload_slot(_error: BaseException | None) -> None:
    """teardown_request hook (create_app): the slot goes back whatever the outcome (left to expire if
    this fails)."""
    slot = g.pop("upload_slot", None)
    if slot is None:
        return
    app_state = state()
    app_state.slot_leases.let_go(slot.id)
    try:
        service.release_file_slot(app_state, slot)
    except Exception:
        log.exception("could not release upload slot %s (request %s)", slot.public_id, g.get("request_id"))


def held_upload_slot() -> Upload:
    """The slot this multipart request holds (for a `takes_file` view)."""
    return g.upload_slot


@blp.route("/presigned")
class Presigned(MethodView):
    @idempotent
    @blp.doc(
        parameters=[
            {"in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string"}}
        ]
    )
    @blp.arguments(PresignRequestSchema())
    @blp.response(201, PresignResponseSchema)
    @blp.alt_response(503, schema=ErrorSchema, headers=_RETRY_AFTER_503)
    @errors(blp, 400, 409, 413, 415, 422)
    def post(self, body):
        """Get a presigned upload URL

        One PUT of exactly `size` bytes to `url` with `headers`, before `expires_at`; then call
        POST /v1/uploads/complete. `content_type` is an audio/* or video/* media type (or
        application/octet-stream, application/ogg, application/mp4). Counts against the plan's concurrent
        uploads until completed or expired: at the cap, 429 CONCURRENT_UPLOAD_LIMIT with Retry-After, the
        seconds until the oldest upload in progress expires.

        With an `Idempotency-Key` header, the same request again answers the first answer (the same
        upload, header `Idempotent-Replayed: true`), as for POST /v1/transcriptions: a client retrying
        a whole upload resumes the one it reserved instead of holding a second slot. 409 CONFLICT for
        the key with a different body, or while its first request still runs (Retry-After), or once the
        upload it created was deleted (`details.reason` `key_reused`, `in_progress`, `deleted`).
        """
        app_state = state()
        presigned = service.presign(
            app_state,
            current_principal().org,
            body["filename"],
            body["content_type"],
            body["size"],
            base_url=app_state.settings.public_base_url,
        )
        return {
            "id": presigned.upload.public_id,
            "url": presigned.url,
            "method": "PUT",
            "headers": presigned.headers,
            "expires_at": presigned.upload.expires_at,
        }


@blp.route("/<string:upload_id>/content")
class Content(MethodView):
    public = True  # authorised by the URL's signature, not by an API key

    @blp.doc(
        security=[],
        parameters=[{"in": "query", "name": "signature", "required": True, "schema": {"type": "string"}}],
        requestBody={
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        },
    )
    @blp.response(200, UploadSchema)
    @errors(blp, 400, 403, 404, 409, 413, 503, authenticated=False)
    def put(self, upload_id):
        """Upload the bytes (local storage only: what a presigned URL points to)"""
        return service.receive_content(
            state(), upload_id, request.args.get("signature", ""), request.stream, request.content_length
        )


@blp.route("/complete")
class Complete(MethodView):
    @blp.arguments(CompleteRequestSchema())
    @blp.response(200, UploadSchema)
    @errors(blp, 400, 404, 409, 415, 422)
    def post(self, body):
        """Mark an upload complete: it exists, has the declared size and is really audio/video"""
        return service.complete(state(), current_principal().org, body["upload_id"])


@blp.route("/<string:upload_id>")
class UploadById(MethodView):
    @blp.response(204)
    @errors(blp, 404, 409)
    def delete(self, upload_id):
        """Delete an upload no transcription uses

        Its bytes are removed and its concurrent-upload slot is free at once: the way to give back the
        slot of an upload that will not be completed (else it is held until `expires_at`). 409 CONFLICT
        while a transcription uses it (delete the transcription: its upload goes with it), or, on local
        storage, while its PUT or completion is still running (with Retry-After; on S3 a completion
        running meanwhile answers 404). Afterwards the upload, its URL included, answers 404.
        """
        service.cancel(state(), current_principal().org, upload_id)
        return None
