"""Feedback: the true labels of served rows, live quality per version, and A/B reports.

Feedback rows are kept beside the prediction that was served (and the version that
served it) and also join the model's training set. From them:

- :func:`quality`: per version, accuracy and macro F1 (classifiers) or MAE and RMSE
  (regressors);
- :func:`ab_report`: two versions compared, each metric with a 95% confidence interval,
  and a significance test: the two-proportion z-test on accuracy, Welch's t-test on
  absolute errors. Below ``ab_min_samples`` labeled rows per version it says so instead.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from app.access.auth import may_read
from app.db import Feedback, Job, TrainingExample
from app.db.ids import by_id
from app.errors import FeedbackConflict, InvalidInput, JobNotFound
from app.lifecycle.training import quality_metrics
from app.predictions.view import JobStatus
from app.services import Services

if TYPE_CHECKING:
    from app.access.auth import Principal


def record(svc: Services, job_id: str, labels: list[Any], reader: Principal | None = None) -> dict[str, Any]:
    """Store the true label (or value) of each row of a finished job; None skips a row.

    ``reader`` is the calling API key (None with auth off): another key's job is not found.
    """
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id) from None
    with svc.engine.connect() as conn:
        job = conn.execute(select(Job.__table__).where(by_id(Job, parsed))).mappings().first()
    if job is None or not may_read(reader, job["owner_key_id"]):
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id)
    if job["status"] != JobStatus.SUCCEEDED:
        raise InvalidInput(
            f"job {job_id} is {job['status']}; feedback needs a succeeded job", status=job["status"]
        )
    if len(labels) != job["n_rows"]:
        raise InvalidInput(f"{len(labels)} labels for a job of {job['n_rows']} rows", rows=job["n_rows"])
    signature = svc.registry.resolve(job["model_name"], version=job["model_version"]).signature
    rows = [(i, _checked(label, i, signature)) for i, label in enumerate(labels) if label is not None]
    if not rows:
        raise InvalidInput("every label is null: nothing to record")
    feedback = [
        {"job_id": parsed, "model_name": job["model_name"], "model_version": job["model_version"], "row": i,
         "label": label, "prediction": job["outputs"][i]["prediction"]}
        for i, label in rows
    ]  # fmt: skip
    examples = [
        {"model_name": job["model_name"], "features": job["inputs"][i], "label": label, "source": "feedback"}
        for i, label in rows
    ]
    try:
        with svc.engine.begin() as conn:
            conn.execute(insert(Feedback), feedback)
            conn.execute(insert(TrainingExample), examples)
    except IntegrityError:
        raise FeedbackConflict(f"feedback for job {job_id} was already recorded", job_id=job_id) from None
    return {
        "job_id": job_id,
        "recorded_rows": len(rows),
        "model": {"name": job["model_name"], "version": job["model_version"]},
    }


def _checked(label: Any, row: int, signature: dict[str, Any]) -> Any:
    if signature["task"] == "classification":
        classes = signature["classes"] or []
        match = next((c for c in classes if str(c) == str(label)), None)
        if match is None or isinstance(label, (dict, list)):
            raise InvalidInput(f"label of row {row} is not one of the classes {classes}", row=row)
        return match
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label):
        raise InvalidInput(f"label of row {row} must be a finite number", row=row)
    return float(label)


def _labeled(svc: Services, name: str) -> dict[int, tuple[list[Any], list[Any]]]:
    """Per version: (true labels, predictions) of every row with feedback."""
    by_version: dict[int, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(Feedback.model_version, Feedback.label, Feedback.prediction).where(
                Feedback.model_name == name
            )
        )
        for version, label, prediction in rows:
            by_version[version][0].append(label)
            by_version[version][1].append(prediction)
    return by_version


def quality(svc: Services, name: str) -> dict[str, Any]:
    """Live quality of each version that has feedback."""
    task = svc.registry.resolve(name).signature["task"]
    versions = []
    for version, (truth, predicted) in sorted(_labeled(svc, name).items()):
        metrics = quality_metrics(truth, predicted, task == "classification")
        versions.append({"version": version, "n": len(truth), **metrics})
    return {"model": name, "task": task, "versions": versions}


def ab_report(svc: Services, name: str, a: int, b: int) -> dict[str, Any]:
    """Versions ``a`` and ``b`` compared on their feedback (see the module docstring)."""
    # Resolving both is also the 404 for an unknown version.
    task = svc.registry.resolve(name, version=a).signature["task"]
    svc.registry.resolve(name, version=b)
    labeled = _labeled(svc, name)
    arms = {v: labeled.get(v, ([], [])) for v in (a, b)}
    minimum = svc.settings.ab_min_samples
    short = [f"v{v} has {len(arms[v][0])}" for v in (a, b) if len(arms[v][0]) < minimum]
    report: dict[str, Any] = {"model": name, "task": task}
    if task == "classification":
        hits = {v: np.asarray([t == p for t, p in zip(*arms[v], strict=True)], dtype=float) for v in (a, b)}
        report["metric"] = "accuracy"
        report["a"], report["b"] = (_proportion_arm(v, hits[v]) for v in (a, b))
        test = None if short else _two_proportion_z(hits[a], hits[b])
    else:
        errors = {v: np.abs(np.asarray(arms[v][0], float) - np.asarray(arms[v][1], float)) for v in (a, b)}
        report["metric"] = "mean_absolute_error"
        report["a"], report["b"] = (_mean_arm(v, errors[v]) for v in (a, b))
        test = None if short else _welch(errors[a], errors[b])
    report["test"] = test
    if short:
        report["verdict"] = (
            f"not enough data: {' and '.join(short)} labeled rows; at least {minimum} per version are needed"
        )
    else:
        assert test is not None, "a test runs whenever both versions have enough rows"
        better = "higher" if task == "classification" else "lower"
        leader = a if (report["a"]["value"] > report["b"]["value"]) == (task == "classification") else b
        significance = "significant" if test["p_value"] < 0.05 else "not significant"
        report["verdict"] = (
            f"v{leader} is {better} on {report['metric']}; the difference is "
            f"{significance} at the 5% level (p = {test['p_value']:.4g})"
        )
    return report


def _proportion_arm(version: int, hits: np.ndarray) -> dict[str, Any]:
    n, k = len(hits), int(hits.sum())
    arm: dict[str, Any] = {"version": version, "n": n, "value": k / n if n else None, "ci95": None}
    if n:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        arm["ci95"] = [float(ci.low), float(ci.high)]
    return arm


def _mean_arm(version: int, errors: np.ndarray) -> dict[str, Any]:
    n = len(errors)
    arm: dict[str, Any] = {
        "version": version,
        "n": n,
        "value": float(errors.mean()) if n else None,
        "ci95": None,
    }
    if n >= 2:
        ci = stats.ttest_1samp(errors, 0.0).confidence_interval(0.95)
        arm["ci95"] = [float(ci.low), float(ci.high)]
    return arm


def _two_proportion_z(hits_a: np.ndarray, hits_b: np.ndarray) -> dict[str, Any]:
    """Pooled two-proportion z-test (two-sided)."""
    n_a, n_b = len(hits_a), len(hits_b)
    p_a, p_b = hits_a.mean(), hits_b.mean()
    pooled = (hits_a.sum() + hits_b.sum()) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (p_a - p_b) / spread if spread > 0 else 0.0
    return {
        "name": "two-proportion z-test",
        "statistic": float(z),
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }


def _welch(errors_a: np.ndarray, errors_b: np.ndarray) -> dict[str, Any]:
    result = stats.ttest_ind(errors_a, errors_b, equal_var=False)
    return {"name": "Welch's t-test", "statistic": float(result.statistic), "p_value": float(result.pvalue)}
