"""GET /v1/health: are the database and Redis reachable? No key needed (load balancers call it)."""

from __future__ import annotations

import logging

from flask.views import MethodView

from api.blueprints import Blueprint, errors
from api.errors import error_response
from api.models import db
from api.schemas.health import HealthSchema
from api.state import state
from cliptext.errors import ErrorCode

log = logging.getLogger(__name__)
blp = Blueprint(
    "health", __name__, url_prefix="/v1/health", description="Liveness of the API and its backing services"
)


def _check_database() -> str:
    try:
        db.execute_sql("SELECT 1").fetchone()
        return "ok"
    except Exception as error:  # any failure means "not reachable" for a health check
        log.warning("health: database unreachable: %r", error)
        return "unavailable"


def _check_redis() -> str:
    try:
        state().redis.ping()
        return "ok"
    except Exception as error:
        log.warning("health: redis unreachable: %r", error)
        return "unavailable"


@blp.route("")
class Health(MethodView):
    public = True

    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @errors(blp, 503, authenticated=False)
    def get(self):
        """Database and Redis reachability"""
        checks = {"database": _check_database(), "redis": _check_redis()}
        if all(value == "ok" for value in checks.values()):
            return {"status": "ok", **checks}
        return error_response(ErrorCode.SERVICE_UNAVAILABLE, "A backing service is unavailable", checks)
