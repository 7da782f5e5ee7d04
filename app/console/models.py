"""Models: the list, a model's page (versions, aliases and their audit trail, training runs,
drift, live quality, the A/B report, cards) and its admin actions (app/console/actions.py)."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from app.console import ab, charts, queries
from app.console.actions import ACTIONS
from app.console.blueprint import bp, page, require_admin, viewer
from app.errors import PredqError
from app.lifecycle import drift
from app.lifecycle.training_runs import runs
from app.services import current_services


@bp.route("/models", methods=["GET"])
def models() -> ResponseReturnValue:
    svc = current_services()
    described = svc.registry.list_models()
    return page("models.html", models=described, quality=queries.quality_by_model(svc, described))


@bp.route("/models/<string:name>", methods=["GET"])
def model(name: str) -> ResponseReturnValue:
    svc = current_services()
    described = svc.registry.describe(name)
    reports = drift.latest_reports(svc, name, 30)
    over_time = queries.quality_over_time(svc, described)
    metric = "accuracy" if _classifier(described) else "MAE"
    quality = queries.quality_by_model(svc, [described], name).get(name, {})
    shares = [(str(r["created_at"]), r["drifted_share"]) for r in reversed(reports)]
    checked = [(when, share) for when, share in shares if share is not None]
    return page(
        "model.html",
        model=described,
        sizes=queries.artifact_sizes(svc, name),
        events=svc.registry.alias_history(name, 20),
        runs=runs(svc, name, 20),
        reports=reports,
        drift_chart=charts.drift(tuple(checked)) if checked else None,
        quality=[quality[v] for v in sorted(quality)],
        quality_chart=charts.quality(_frozen(over_time), metric) if over_time else None,
        ab=_ab_report(svc, described, quality),
        failed=queries.failed_jobs(svc, name, viewer()),
    )


@bp.route("/models/<string:name>/<any(promote, rollback, traffic, retrain, 'drift-check'):action>",
          methods=["GET", "POST"])  # fmt: skip
def model_action(name: str, action: str) -> ResponseReturnValue:
    """Step 1 (GET, or a POST with errors): the form. Step 2 (a valid POST): what will change,
    to confirm. Step 3 (the confirmed POST): done, back to the model's page."""
    require_admin()
    svc = current_services()
    described = svc.registry.describe(name)
    spec = ACTIONS[action]
    form = request.form if request.method == "POST" else request.args
    values, errors = spec.parse(form, described) if request.method == "POST" else ({}, {})
    context: dict[str, Any] = {"model": described, "action": action, "spec": spec, "form": form}
    if request.method == "GET" or errors:
        return page("action.html", 422 if errors else 200, errors=errors, **context)
    if form.get("confirmed") != "yes":
        hidden = [(k, v) for k, v in form.items(multi=True) if k not in ("csrf_token", "confirmed")]
        return page("confirm.html", summary=spec.summary(values, described), hidden=hidden, **context)
    try:
        done = spec.apply(svc, name, values, _actor())
    except PredqError as error:
        if error.status >= 500 or error.status == 404:
            raise
        return page("action.html", error.status, errors={"": error.message}, **context)
    flash(done)
    return redirect(url_for("console.model", name=name), 303)


@bp.route("/models/<string:name>/versions/<int:version>/card", methods=["GET"])
def card(name: str, version: int) -> ResponseReturnValue:
    from app.lifecycle.cards import card as made

    link = url_for("console.importance", name=name, version=version)
    return page("card.html", name=name, version=version, card=made(current_services(), name, version, link))


@bp.route("/models/<string:name>/versions/<int:version>/importance.png", methods=["GET"])
def importance(name: str, version: int) -> ResponseReturnValue:
    from app.lifecycle.cards import importance_png

    return Response(importance_png(current_services(), name, version), mimetype="image/png")


def _classifier(described: dict[str, Any]) -> bool:
    versions = described["versions"]
    return bool(versions) and versions[-1]["signature"].get("task") == "classification"


def _ab_report(
    svc: Any, described: dict[str, Any], quality: dict[int, dict[str, Any]]
) -> dict[str, Any] | None:
    """Champion against the other version the traffic policy serves (else the newest other one)."""
    champion = described["aliases"].get("champion")
    routed = [r.get("version") for r in described["traffic_policy"]["routes"] if r.get("version")]
    others = [v for v in routed if v != champion] or [
        v["version"] for v in reversed(described["versions"]) if v["version"] != champion
    ]
    if champion is None or not others:
        return None
    metric = "accuracy" if _classifier(described) else "mae"
    empty = {"n": 0, "metric": metric, "value": 0.0, "square": 0.0}
    arms = [quality.get(v) or {"version": v, **empty} for v in (champion, others[0])]
    return ab.report(arms[0], arms[1], svc.settings.ab_min_samples)


def _frozen(series: dict[int, list[tuple[str, float, int]]]) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    return tuple((version, tuple(points)) for version, points in sorted(series.items()))


def _actor() -> str:
    principal = viewer()
    return f"console:{principal.name}" if principal else "console (auth off)"
