"""The admin actions on a model, each a form checked here, a confirmation step, then one call
to the registry or lifecycle function the API's route calls too.

An action is three functions: ``parse`` (the posted form and the model's description to
values and per-field errors), ``summary`` (the sentence the confirmation step shows) and
``apply`` (does it; returns what the page says afterwards). Errors change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.lifecycle import drift
from app.lifecycle.training_runs import start_run
from app.registry.traffic import Policy, Route
from app.services import Services

Values = dict[str, Any]
Errors = dict[str, str]


@dataclass(frozen=True)
class Action:
    title: str
    parse: Callable[[Mapping[str, str], dict[str, Any]], tuple[Values, Errors]]
    summary: Callable[[Values, dict[str, Any]], str]
    apply: Callable[[Services, str, Values, str], str]


def _versions(model: dict[str, Any]) -> list[int]:
    return [v["version"] for v in model["versions"]]


def _reason(form: Mapping[str, str], errors: Errors) -> str:
    reason = form.get("reason", "").strip()
    if len(reason) > 1000 or "\x00" in reason:
        errors["reason"] = "A reason is at most 1,000 characters."
    return reason


def _alias(form: Mapping[str, str], errors: Errors) -> str:
    alias = form.get("alias", "").strip() or "champion"
    if len(alias) > 100 or not alias.isprintable():
        errors["alias"] = "An alias is 1 to 100 printable characters."
    return alias


def _parse_promote(form: Mapping[str, str], model: dict[str, Any]) -> tuple[Values, Errors]:
    errors: Errors = {}
    alias, reason = _alias(form, errors), _reason(form, errors)
    raw = form.get("version", "")
    version = int(raw) if raw.isdigit() else None
    if version not in _versions(model):
        errors["version"] = f"Choose one of the model's versions ({', '.join(map(str, _versions(model)))})."
    return {"alias": alias, "version": version, "reason": reason}, errors


def _promote(svc: Services, name: str, values: Values, actor: str) -> str:
    svc.registry.set_alias(name, values["alias"], values["version"], actor, values["reason"])
    return f"{values['alias']} now points at version {values['version']}."


def _parse_rollback(form: Mapping[str, str], model: dict[str, Any]) -> tuple[Values, Errors]:
    errors: Errors = {}
    alias, reason = _alias(form, errors), _reason(form, errors)
    if not errors and alias not in model["aliases"]:
        errors["alias"] = f"The model has no alias {alias!r}."
    return {"alias": alias, "reason": reason}, errors


def _rollback(svc: Services, name: str, values: Values, actor: str) -> str:
    version = svc.registry.rollback(name, values["alias"], actor, values["reason"])
    return f"{values['alias']} rolled back to version {version}."


def _parse_traffic(form: Mapping[str, str], model: dict[str, Any]) -> tuple[Values, Errors]:
    """Weights in percent per version (``weight_v<N>``), summing to 100, and an optional shadow."""
    errors: Errors = {}
    known = _versions(model)
    weights: dict[int, float] = {}
    for field, raw in form.items():
        if not field.startswith("weight_v"):
            continue
        tail = field.removeprefix("weight_v")
        version = int(tail) if tail.isdigit() else -1
        if version not in known:
            errors[field] = f"Version {tail} is not a version of this model."
            continue
        try:
            weight = float(raw.strip() or 0)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or not 0 <= weight <= 100:
            errors[field] = "A weight is a number from 0 to 100."
        elif weight:
            weights[version] = weight
    total = sum(weights.values())
    if not errors and abs(total - 100) > 1e-9:
        errors["weights"] = f"The weights add up to {total:g}; they must add up to 100."
    raw_shadow = form.get("shadow", "").strip()
    shadow = int(raw_shadow) if raw_shadow.isdigit() else None
    if raw_shadow and shadow not in known:
        errors["shadow"] = f"Version {raw_shadow} is not a version of this model."
    return {"weights": weights, "shadow": shadow}, errors


def _traffic_summary(values: Values, model: dict[str, Any]) -> str:
    split = ", ".join(f"version {v}: {w:g}%" for v, w in sorted(values["weights"].items()))
    shadow = f"; version {values['shadow']} as the shadow" if values["shadow"] else "; no shadow"
    return f"Route {model['name']}'s requests that name no version as {split}{shadow}."


def _traffic(svc: Services, name: str, values: Values, actor: str) -> str:
    routes = tuple(Route(version=v, weight=w) for v, w in sorted(values["weights"].items()))
    shadow = Route(version=values["shadow"]) if values["shadow"] else None
    svc.registry.set_policy(name, Policy(routes, shadow))
    return "The traffic split is set; API processes apply it within REGISTRY_CACHE_SECONDS."


def _parse_nothing(form: Mapping[str, str], model: dict[str, Any]) -> tuple[Values, Errors]:
    return {}, {}


def _retrain(svc: Services, name: str, values: Values, actor: str) -> str:
    run_id = start_run(svc, name)
    return f"Training run {run_id} is queued; it shows under training runs."


def _drift_check(svc: Services, name: str, values: Values, actor: str) -> str:
    report = drift.check_model(svc, name)
    return f"Drift check done: {report['status']}."


ACTIONS: dict[str, Action] = {
    "promote": Action(
        "Promote a version",
        _parse_promote,
        lambda v, m: (
            f"Point {m['name']}'s alias {v['alias']} at version {v['version']} "
            f"(now {m['aliases'].get(v['alias'], 'unset')})."
        ),
        _promote,
    ),
    "rollback": Action(
        "Roll back an alias",
        _parse_rollback,
        lambda v, m: f"Point {m['name']}'s alias {v['alias']} back at the version before its last move.",
        _rollback,
    ),
    "traffic": Action("Set the traffic split", _parse_traffic, _traffic_summary, _traffic),
    "retrain": Action(
        "Start a retrain", _parse_nothing, lambda v, m: f"Queue a training run of {m['name']}.", _retrain
    ),
    "drift-check": Action(
        "Run a drift check",
        _parse_nothing,
        lambda v, m: f"Check {m['name']}'s champion for drift now (the report is stored).",
        _drift_check,
    ),
}
