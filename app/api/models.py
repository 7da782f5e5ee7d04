"""The registry over REST: models, their drift reports, and moving aliases (admin)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from app import drift
from app.api import services
from app.api.schemas import (
    AliasUpdateSchema,
    DriftListSchema,
    DriftQuerySchema,
    ModelListSchema,
    ModelSchema,
)
from app.auth import requires_scope

blp = Blueprint("models", __name__, url_prefix="/v1", description="The model registry")


@blp.route("/models", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models() -> dict[str, Any]:
    return {"models": services().registry.list_models()}


@blp.route("/models/<string:name>", methods=["GET"])
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_model(name: str) -> dict[str, Any]:
    return services().registry.describe(name)


@blp.route("/models/<string:name>/drift", methods=["GET"])
@blp.arguments(DriftQuerySchema, location="query", as_kwargs=True)
@blp.response(200, DriftListSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_drift(name: str, limit: int) -> dict[str, Any]:
    """The newest drift reports (beat runs a check every DRIFT_INTERVAL_SECONDS)."""
    return {"model": name, "reports": drift.latest_reports(services(), name, limit)}


@blp.route("/models/<string:name>/aliases/<string:alias>", methods=["PUT"])
@requires_scope("admin")
@blp.arguments(AliasUpdateSchema)
@blp.response(200, ModelSchema)
@blp.alt_response(403, schema="Error", description="The API key lacks the admin scope.")
@blp.alt_response(404, schema="Error", description="Unknown model or version.")
def set_alias(body: dict[str, Any], name: str, alias: str) -> dict[str, Any]:
    """Point ALIAS at a version (promotion); serving follows within REGISTRY_CACHE_SECONDS."""
    registry = services().registry
    registry.set_alias(name, alias, body["version"])
    return registry.describe(name)
