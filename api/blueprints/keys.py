"""/v1/orgs/{org_id}/keys: API keys managed by the organization's members (the operator's CLI does the
same: `flask --app api keys create|list|revoke`). Rules in api.services.keys."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.blueprints.orgs import NO_STORE, NO_STORE_DOC
from api.schemas.keys import ApiKeyListSchema, CreatedKeySchema, CreateKeySchema, KeyListQuerySchema
from api.services import keys as service

blp = Blueprint("keys", __name__, url_prefix="/v1/orgs", description="API keys")


@blp.route("/<string:org_id>/keys")
class Keys(MethodView):
    @blp.arguments(CreateKeySchema())
    @blp.response(201, CreatedKeySchema, headers=NO_STORE_DOC)
    @errors(blp, 400, 403, 404, 409, 413, 415, 422)
    def post(self, body, org_id):
        """Create an API key: yours, or (owners and admins) a member's

        Only owners create keys for owners. The key is in this answer only: store it now. A member holds
        at most 25 active keys (409 beyond: revoke one first).
        """
        created = service.create_key(current_principal().membership, org_id, body.get("member_id"))
        return created, 201, NO_STORE

    @blp.arguments(KeyListQuerySchema(), location="query", unknown=ma.RAISE)
    @blp.response(200, ApiKeyListSchema)
    @errors(blp, 404, 422)
    def get(self, query, org_id):
        """The organization's keys, oldest first, revoked ones too (owners and admins); a member sees
        their own

        At most `limit` (100) a page: when `has_more` is true, ask again with `starting_after` set to the
        last key's id.
        """
        page = service.list_keys(
            current_principal().membership, org_id, query["limit"], query["starting_after"]
        )
        return {"data": page.data, "has_more": page.has_more}


@blp.route("/<string:org_id>/keys/<string:key_id>")
class KeyById(MethodView):
    @blp.response(204)
    @errors(blp, 403, 404, 409)
    def delete(self, org_id, key_id):
        """Revoke an API key: owners and admins any, a member their own

        Every API process refuses it from its next request (the key you call with too). Revoking a
        revoked key is a 204 again. The organization's last active owner key is kept (409).
        """
        service.revoke_key(current_principal().membership, org_id, key_id)
        return None
