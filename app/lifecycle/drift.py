"""Data drift: does the data a model sees still look like the data it learned on?

Each version may keep a reference sample of its training inputs (taken at registration).
:func:`check_model` compares it with the inputs of recent jobs, feature by feature:

- the two-sample Kolmogorov-Smirnov test (scipy): the feature drifts when p < ``p_value``;
- the population stability index over the reference's deciles: drifts when PSI > ``psi``.

A feature counts as drifted when either test says so; the window counts as drifted when
at least ``share`` of the features drift. Reports are stored in ``drift_reports``, served
at ``GET /v1/models/{name}/drift`` and exported as metrics; for a model set to retrain on
drift (``models schedule NAME --on-drift``), a drifted window queues a training run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from scipy.stats import ks_2samp
from sqlalchemy import insert, select

from app.db import DriftReport, Job, Model, newest_rows, utcnow
from app.lifecycle.training_runs import start_run
from app.services import Services
from app.webhooks import outbox
from app.webhooks.events import Event

log = logging.getLogger(__name__)

#: Floor for a bin's share in PSI, so an empty bin does not make it infinite.
_EPSILON = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.05
    psi: float = 0.2
    share: float = 0.5


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``, on the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant feature: below it, and at or above it
        edges = np.array([-np.inf, edges[0], np.inf])
    else:
        # Open-ended outer bins, so values beyond the reference's range still count.
        edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / len(current)
    expected, actual = np.maximum(expected, _EPSILON), np.maximum(actual, _EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def compare(
    reference: np.ndarray,
    window: np.ndarray,
    names: list[str],
    thresholds: DriftThresholds = DriftThresholds(),  # noqa: B008 (frozen, never mutated)
) -> dict[str, Any]:
    """Per-feature KS and PSI, and whether the window as a whole drifted."""
    features: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        ks = ks_2samp(reference[:, j], window[:, j])
        score = psi(reference[:, j], window[:, j])
        drifted = bool(ks.pvalue < thresholds.p_value or score > thresholds.psi)
        features.append(
            {
                "feature": name,
                "ks_statistic": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "psi": score,
                "drifted": drifted,
            }
        )
    share = sum(f["drifted"] for f in features) / len(features)
    return {"drifted": share >= thresholds.share, "drifted_share": share, "features": features}


def check_model(svc: Services, name: str) -> dict[str, Any]:
    """Compare the champion's reference sample with recent inputs; store and return the report."""
    settings = svc.settings
    served = svc.registry.resolve(name)
    reference = svc.registry.reference(name, served.version)
    report: dict[str, Any] = {
        "model_name": name,
        "model_version": served.version,
        "created_at": utcnow(),
        "reference_rows": 0 if reference is None else len(reference),
        "window_rows": 0,
        "drifted": False,
        "drifted_share": None,
        "features": [],
    }
    if reference is None:
        report["status"] = "no_reference"
    else:
        window = recent_inputs(svc, name, served.version)
        report["window_rows"] = len(window)
        if len(window) < settings.drift_min_rows:
            report["status"] = "insufficient_data"
        else:
            names = served.signature["feature_names"] or [
                f"x{j}" for j in range(served.signature["n_features"])
            ]
            thresholds = DriftThresholds(settings.drift_p_value, settings.drift_psi, settings.drift_share)
            report |= compare(reference, window, names, thresholds)
            report["status"] = "drift" if report["drifted"] else "ok"
    with svc.engine.begin() as conn:
        report["id"] = conn.execute(insert(DriftReport).returning(DriftReport.id), report).scalar_one()
        retrain_on_drift = conn.execute(select(Model.retrain_on_drift).where(Model.name == name)).scalar_one()
        if report["drifted"]:  # announced with the report it announces (app/webhooks/)
            outbox.event_deliveries(conn, Event.DRIFT_DETECTED, f"drift:{report['id']}", report["created_at"],
                                    payload=outbox.drift_payload(report))  # fmt: skip
    if report["drifted"] and retrain_on_drift:
        report["retrain_run"] = str(start_run(svc, name, "drift"))
    log.info(
        "drift check of %s v%s: %s (%d window rows)",
        name,
        served.version,
        report["status"],
        report["window_rows"],
        extra={"model": name, "version": served.version, "drift_status": report["status"]},
    )
    return report


def recent_inputs(svc: Services, name: str, version: int) -> np.ndarray:
    """Rows of the newest jobs for this version within the window, at most drift_window_rows."""
    settings = svc.settings
    since = utcnow() - timedelta(seconds=settings.drift_window_seconds)
    rows: list[list[float]] = []
    with svc.engine.connect() as conn:
        jobs = conn.execute(
            select(Job.inputs)
            .where(Job.model_name == name, Job.model_version == version, Job.created_at >= since)
            .order_by(Job.created_at.desc())
            .limit(settings.drift_window_rows)
        )
        for (inputs,) in jobs:
            rows.extend(inputs)
            if len(rows) >= settings.drift_window_rows:
                break
    return np.asarray(rows[: settings.drift_window_rows], dtype=np.float64)


def latest_reports(svc: Services, name: str, limit: int = 10) -> list[dict[str, Any]]:
    """The newest drift reports of a model, newest first."""
    svc.registry.require(name)
    return newest_rows(svc.engine, DriftReport, name, DriftReport.id, limit)
