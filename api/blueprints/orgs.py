"""/v1/orgs: the caller's organizations, one organization's details, adding a member, the webhook
signing secret (shown and rotated by owners and admins)."""

from __future__ import annotations

from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.schemas.orgs import (
    AddMemberSchema,
    MemberSchema,
    OrganizationListSchema,
    OrganizationSchema,
    WebhookSecretSchema,
)
from api.services import orgs as service

blp = Blueprint("orgs", __name__, url_prefix="/v1/orgs", description="Organizations and members")


@blp.route("")
class Orgs(MethodView):
    @blp.response(200, OrganizationListSchema)
    @errors(blp)
    def get(self):
        """List your organization: the one the API key belongs to (a key speaks for one organization)"""
        return {"data": service.list_orgs(current_principal().membership)}


@blp.route("/<string:org_id>")
class OrgById(MethodView):
    @blp.response(200, OrganizationSchema)
    @errors(blp, 404)
    def get(self, org_id):
        """Organization details: plan, limits, member count"""
        return service.get_org(current_principal().membership, org_id)


@blp.route("/<string:org_id>/members")
class Members(MethodView):
    @blp.arguments(AddMemberSchema())
    @blp.response(201, MemberSchema)
    @errors(blp, 400, 403, 404, 409, 413, 415, 422)
    def post(self, body, org_id):
        """Add a team member (owners and admins only)"""
        user, membership = service.add_member(
            current_principal().membership, org_id, body["email"], body["role"]
        )
        return {
            "id": user.public_id,
            "email": user.email,
            "role": membership.role,
            "created_at": membership.created_at,
        }


# A secret must not be kept by a proxy or a browser cache: set here, whatever the app's defaults become.
NO_STORE = {"Cache-Control": "no-store"}
NO_STORE_DOC = {"Cache-Control": {"description": "no-store", "schema": {"type": "string"}}}


@blp.route("/<string:org_id>/webhook-secret")
class WebhookSecret(MethodView):
    @blp.response(200, WebhookSecretSchema, headers=NO_STORE_DOC)
    @errors(blp, 403, 404)
    def get(self, org_id):
        """The secret webhook deliveries are signed with (owners and admins only)"""
        return service.webhook_secret(current_principal().membership, org_id), 200, NO_STORE


@blp.route("/<string:org_id>/webhook-secret/rotate")
class RotateWebhookSecret(MethodView):
    @blp.response(200, WebhookSecretSchema, headers=NO_STORE_DOC)
    @errors(blp, 400, 403, 404, 413, 415)
    def post(self, org_id):
        """Replace the webhook secret (owners and admins only); for 24 h deliveries carry a signature
        with the old secret too"""
        return service.rotate_webhook_secret(current_principal().membership, org_id), 200, NO_STORE
