"""/v1/orgs/{org_id}/keys: API keys managed by the organization's members (the operator's CLI does the
same: `flask --app api keys create|list|revoke`). Rules in api.services.keys."""

from __future__ import annotations

from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.blueprints.orgs import NO_STORE, NO_STORE_DOC
from api.schemas.keys import ApiKeyListSchema, CreatedKeySchema, CreateKeySchema
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

    @blp.response(200, ApiKeyListSchema)
    @errors(blp, 404)
    def get(self, org_id):
        """The organization's keys, revoked ones too (owners and admins); a member sees their own"""
        return {"data": service.list_keys(current_principal().membership, org_id)}


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
