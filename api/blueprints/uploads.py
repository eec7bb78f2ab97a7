"""/v1/uploads: presigned URL, the signed local PUT (local storage), completion."""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.schemas.uploads import (
    CompleteRequestSchema,
    PresignRequestSchema,
    PresignResponseSchema,
    UploadSchema,
)
from api.services import uploads as service
from api.state import state

blp = Blueprint("uploads", __name__, url_prefix="/v1/uploads", description="Upload audio/video files")


@blp.route("/presigned")
class Presigned(MethodView):
    @blp.arguments(PresignRequestSchema())
    @blp.response(201, PresignResponseSchema)
    @errors(blp, 400, 413, 422)
    def post(self, body):
        """Get a presigned upload URL

        One PUT of exactly `size` bytes to `url` with `headers`, before `expires_at`; then call
        POST /v1/uploads/complete. Counts against the plan's concurrent uploads until completed or expired.
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
    @errors(blp, 403, 404, 409, 413, authenticated=False)
    def put(self, upload_id):
        """Upload the bytes (local storage only: what a presigned URL points to)"""
        return service.receive_content(
            state(), upload_id, request.args.get("signature", ""), request.stream, request.content_length
        )


@blp.route("/complete")
class Complete(MethodView):
    @blp.arguments(CompleteRequestSchema())
    @blp.response(200, UploadSchema)
    @errors(blp, 400, 404, 422)
    def post(self, body):
        """Mark an upload complete: it exists, has the declared size and is really audio/video"""
        return service.complete(state(), current_principal().org, body["upload_id"])
