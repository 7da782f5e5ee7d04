"""GET /v1/models and GET /v1/models/{name}."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from app.api import services
from app.api.schemas import ModelListSchema, ModelSchema

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
