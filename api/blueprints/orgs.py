"""/v1/orgs: the caller's organizations, one organization's details, its members (listed, added,
removed, their roles changed; rules in api.services.orgs), the webhook signing secret (shown and
rotated by owners and admins)."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from api.auth import current_principal
from api.blueprints import Blueprint, errors
from api.schemas.orgs import (
    AddMemberSchema,
    ChangeRoleSchema,
    MemberListQuerySchema,
    MemberListSchema,
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
        return service.member_view(user, membership)

    @blp.arguments(MemberListQuerySchema(), location="query", unknown=ma.RAISE)
    @blp.response(200, MemberListSchema)
    @errors(blp, 404, 422)
    def get(self, query, org_id):
        """The organization's members with their roles (any member)

        At most `limit` (100) a page: when `has_more` is true, ask again with `starting_after` set to the
        last member's id.
        """
        page = service.list_members(
            current_principal().membership, org_id, query["limit"], query["starting_after"]
        )
        return {"data": page.data, "has_more": page.has_more}


@blp.route("/<string:org_id>/members/<string:member_id>")
class MemberById(MethodView):
    @blp.arguments(ChangeRoleSchema())
    @blp.response(200, MemberSchema)
    @errors(blp, 400, 403, 404, 409, 413, 415, 422)
    def patch(self, body, org_id, member_id):
        """Change a member's role: owners any, admins between member and admin only (not an owner's)

        The organization's last owner is not demoted (409).
        """
        return service.change_role(current_principal().membership, org_id, member_id, body["role"])

    @blp.response(204)
    @errors(blp, 403, 404, 409)
    def delete(self, org_id, member_id):
        """Remove a member and every API key they hold in the organization: owners and admins, only
        owners remove owners; anyone may remove themselves

        Every API process refuses the removed member's keys from its next request. The organization's
        last owner is kept (409).
        """
        service.remove_member(current_principal().membership, org_id, member_id)
        return None


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
