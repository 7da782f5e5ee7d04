"""The registry over REST: models, their drift reports, and moving aliases (admin)."""

from __future__ import annotations

from typing import Any

from app.access.auth import current_principal, requires_scope
from app.api.blueprint import Blueprint
from app.api.lifecycle_schemas import (
    AbQuerySchema,
    AbReportSchema,
    CardSchema,
    DriftListSchema,
    DriftQuerySchema,
    DriftReportSchema,
    QualitySchema,
    TrainingImportListSchema,
    TrainingImportSchema,
    TrainingRunListSchema,
    TrainingStartedSchema,
)
from app.api.openapi import refusals
from app.api.schemas import (
    AliasEventListSchema,
    AliasUpdateSchema,
    DeadlineDefaultSchema,
    DeadlineDefaultViewSchema,
    ModelListSchema,
    ModelSchema,
    PoolUpdateSchema,
    ReasonSchema,
    ShadowComparisonSchema,
    TrafficPolicySchema,
)
from app.lifecycle import drift, feedback, shadows, training_data
from app.lifecycle.training_runs import runs, start_run
from app.registry import held, pools, traffic
from app.services import current_services

blp = Blueprint("models", __name__, url_prefix="/v1", description="The model registry")


@blp.route("/models", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models() -> dict[str, Any]:
    return {"models": current_services().registry.list_models()}


@blp.route("/models/<string:name>", methods=["GET"])
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_model(name: str) -> dict[str, Any]:
    """The model, each version with ``loaded_on``: how many worker processes hold it loaded."""
    svc = current_services()
    described = svc.registry.describe(name)
    counts = held.holders_or_none(svc.redis, name, [v["version"] for v in described["versions"]])
    for entry in described["versions"]:
        entry["loaded_on"] = counts.get(entry["version"]) if counts is not None else None
    return described


@blp.route("/models/<string:name>/drift", methods=["GET"])
@blp.arguments(DriftQuerySchema, location="query", as_kwargs=True)
@blp.response(200, DriftListSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_drift(name: str, limit: int) -> dict[str, Any]:
    """The newest drift reports (beat runs a check every DRIFT_INTERVAL_SECONDS)."""
    return {"model": name, "reports": drift.latest_reports(current_services(), name, limit)}


@blp.route("/models/<string:name>/aliases/<string:alias>", methods=["PUT"])
@requires_scope("admin")
@blp.arguments(AliasUpdateSchema)
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema="Error", description="Unknown model or version.")
def set_alias(body: dict[str, Any], name: str, alias: str) -> dict[str, Any]:
    """Point ALIAS at a version (promotion); serving follows within REGISTRY_CACHE_SECONDS."""
    registry = current_services().registry
    registry.set_alias(name, alias, body["version"], _actor(), body.get("reason", ""))
    return registry.describe(name)


@blp.route("/models/<string:name>/aliases/<string:alias>/rollback", methods=["POST"])
@requires_scope("admin")
@blp.arguments(ReasonSchema, required=False)
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
@refusals(blp, {409: "The alias has never moved: nothing to go back to."})
def rollback_alias(body: dict[str, Any], name: str, alias: str) -> dict[str, Any]:
    """Point ALIAS back at the version it pointed at before its last move."""
    registry = current_services().registry
    registry.rollback(name, alias, _actor(), body.get("reason", ""))
    return registry.describe(name)


@blp.route("/models/<string:name>/traffic", methods=["PUT"])
@requires_scope("admin")
@blp.arguments(TrafficPolicySchema)
@blp.response(200, ModelSchema)
@blp.alt_response(
    404, schema="Error", description="Unknown model, or a route names an unknown alias or version."
)
def set_traffic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Weights over aliases or versions, and an optional shadow; applies within REGISTRY_CACHE_SECONDS."""
    registry = current_services().registry
    registry.set_policy(name, traffic.parse(body))
    return registry.describe(name)


@blp.route("/models/<string:name>/pool", methods=["PUT"])
@requires_scope("admin")
@blp.arguments(PoolUpdateSchema)
@blp.response(200, ModelSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
@refusals(blp, {422: "A pool the POOLS setting does not list (the error names those it does)."})
def set_pool(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Serve the model's online rows by a worker pool (workers started with -Q inference.POOL);
    default: the shared queue. Wake-ups follow within REGISTRY_CACHE_SECONDS."""
    svc = current_services()
    registry = svc.registry
    registry.require(name)
    pools.check(body["pool"], svc.settings.pools)
    registry.set_pool(name, body["pool"])
    return registry.describe(name)


@blp.route("/models/<string:name>/deadline", methods=["PUT"])
@requires_scope("admin")
@blp.arguments(DeadlineDefaultSchema)
@blp.response(200, DeadlineDefaultViewSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def set_deadline_default(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The default deadline of this model's jobs; applies within REGISTRY_CACHE_SECONDS."""
    current_services().deadlines.set(name, body["default_deadline_ms"])
    return {"model": name, "default_deadline_ms": body["default_deadline_ms"]}


@blp.route("/models/<string:name>/deadline", methods=["GET"])
@blp.response(200, DeadlineDefaultViewSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_deadline_default(name: str) -> dict[str, Any]:
    """The default deadline of this model's jobs (null: none; QUEUE_TTL_SECONDS applies)."""
    svc = current_services()
    svc.registry.require(name)
    return {"model": name, "default_deadline_ms": svc.deadlines.get(name)}


@blp.route("/models/<string:name>/shadow-outputs", methods=["GET"])
@requires_scope("admin")
@blp.response(200, ShadowComparisonSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def shadow_outputs(name: str) -> dict[str, Any]:
    """The shadow version's outputs beside what served the same jobs (clients never see them)."""
    svc = current_services()
    return shadows.shadow_comparisons(svc.engine, svc.registry, name)


@blp.route("/models/<string:name>/quality", methods=["GET"])
@blp.response(200, QualitySchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def get_quality(name: str) -> dict[str, Any]:
    """Live quality of each version from feedback: accuracy and F1, or MAE and RMSE."""
    return feedback.quality(current_services(), name)


@blp.route("/models/<string:name>/ab-report", methods=["GET"])
@blp.arguments(AbQuerySchema, location="query", as_kwargs=True)
@blp.response(200, AbReportSchema)
@blp.alt_response(404, schema="Error", description="Unknown model or version.")
def get_ab_report(name: str, a: int, b: int) -> dict[str, Any]:
    """Versions A and B compared on feedback: each metric with a 95% interval, and a significance test."""
    return feedback.ab_report(current_services(), name, a, b)


@blp.route("/models/<string:name>/alias-events", methods=["GET"])
@blp.response(200, AliasEventListSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def alias_events(name: str) -> dict[str, Any]:
    """The audit trail of the model's aliases: who moved which, when, from where, to where, why."""
    return {"model": name, "events": current_services().registry.alias_history(name)}


@blp.route("/models/<string:name>/retrain", methods=["POST"])
@requires_scope("admin")
@blp.response(202, TrainingStartedSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def start_retrain(name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue a training run; it shows in GET /v1/models/{name}/training-runs."""
    run_id = start_run(current_services(), name)
    return {"run_id": str(run_id), "status": "queued"}, 202, {"Location": f"/v1/models/{name}/training-runs"}


@blp.route("/models/<string:name>/imports", methods=["GET"])
@requires_scope("admin")
@blp.response(200, TrainingImportListSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def list_imports(name: str) -> dict[str, Any]:
    """The model's imports of training data, newest first, with their checks."""
    return {"model": name, "imports": training_data.imports(current_services(), name)}


@blp.route("/models/<string:name>/imports/<int:import_id>", methods=["DELETE"])
@requires_scope("admin")
@blp.response(200, TrainingImportSchema)
@blp.alt_response(404, schema="Error", description="Unknown model or import.")
def drop_import(name: str, import_id: int) -> dict[str, Any]:
    """Drop an import: its rows are left out of every later training run."""
    return training_data.drop_import(current_services(), name, import_id)


@blp.route("/models/<string:name>/imports/<int:import_id>/accept", methods=["POST"])
@requires_scope("admin")
@blp.response(200, TrainingImportSchema)
@blp.alt_response(404, schema="Error", description="Unknown model or import.")
@refusals(blp, {409: "The import was dropped."})
def accept_import(name: str, import_id: int) -> dict[str, Any]:
    """Accept a quarantined import: later training runs use its rows (and, when the model has no
    evaluation set yet, a share of them becomes it). Accepting an accepted import changes nothing."""
    return training_data.accept_import(current_services(), name, import_id, _actor())


@blp.route("/models/<string:name>/drift-checks", methods=["POST"])
@requires_scope("admin")
@blp.response(200, DriftReportSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def run_drift_check(name: str) -> dict[str, Any]:
    """Check the champion for drift now, as beat does on its schedule; the report is stored too."""
    return drift.check_model(current_services(), name)


@blp.route("/models/<string:name>/versions/<int:version>/card", methods=["GET"])
@blp.doc(
    responses={
        "200": {
            "description": "The version's model card: JSON, or Markdown with Accept: text/markdown.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Card"}},
                "text/markdown": {"schema": {"type": "string"}},
            },
        }
    }
)
@blp.alt_response(404, schema="Error", description="Unknown model or version.")
def get_card(name: str, version: int) -> Any:
    """A version's model card, from what the registry knows (built with skops.card)."""
    from flask import Response, request

    from app.lifecycle.cards import card

    made = card(current_services(), name, version)
    if request.accept_mimetypes.best_match(["application/json", "text/markdown"]) == "text/markdown":
        return Response(made["markdown"], mimetype="text/markdown")
    return made


@blp.route("/models/<string:name>/versions/<int:version>/card/importance.png", methods=["GET"])
@blp.doc(
    responses={
        "200": {
            "description": "The card's global feature importance plot.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
)
@blp.alt_response(404, schema="Error", description="Unknown model or version, or no importance to plot.")
def get_card_plot(name: str, version: int) -> Any:
    """The version's global feature importance (mean |SHAP| over its reference sample) as a bar chart."""
    from flask import Response

    from app.lifecycle.cards import importance_png

    return Response(importance_png(current_services(), name, version), mimetype="image/png")


@blp.route("/models/<string:name>/training-runs", methods=["GET"])
@blp.response(200, TrainingRunListSchema)
@blp.alt_response(404, schema="Error", description="Unknown model.")
def training_runs(name: str) -> dict[str, Any]:
    """The model's training runs, newest first, each with its decision and the numbers behind it."""
    return {"model": name, "runs": runs(current_services(), name)}


def register_schemas(spec: Any) -> None:
    spec.components.schema("Card", schema=CardSchema)


def _actor() -> str:
    principal = current_principal()
    return f"key:{principal.name}" if principal else "anonymous (auth off)"
