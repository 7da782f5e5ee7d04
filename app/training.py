"""Retraining: fit a fresh copy of the champion and promote it only when it is better.

A run (:func:`retrain`) clones the champion's estimator (``sklearn.base.clone``: same
class and parameters, no fitted state), fits it on the newest ``training_window_rows``
examples of the model's training set, scores candidate and champion on the same held-out
split, registers the candidate with its metrics and lineage, and points ``champion`` at it
only when it beats the champion by ``training_margin``; otherwise it becomes ``challenger``.
Every run is a ``training_runs`` row with its decision and the numbers behind it.

One run at a time per model (a Redis lock), and a run id given twice trains once: a
redelivered Celery message finds its run already recorded.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io
from sklearn.base import clone
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error
from sklearn.model_selection import train_test_split
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.celery_app import RETRAIN
from app.db import Model, TrainingExample, TrainingRun, newest_rows, utcnow
from app.errors import InvalidInput
from app.metrics import TRAINING_RUNS
from app.services import Services
from app.signature import in_feature_order, rows_to_matrix

log = logging.getLogger(__name__)


def import_examples(svc: Services, name: str, table: Any, label: str) -> int:
    """Add the rows of ``table`` (a DataFrame) to the model's training set; returns how many.

    Features are taken by the champion's feature names, or as the first columns in order
    when it has none; ``label`` names the target column.
    """
    served = svc.registry.resolve(name)
    if label not in table.columns:
        raise InvalidInput(f"no column {label!r} in the training data", column=label)
    features = in_feature_order(table.drop(columns=[label]), served.signature, "the training data")
    if served.signature["feature_names"] is None:
        features = features.iloc[:, : served.signature["n_features"]]
    matrix = rows_to_matrix(features.to_numpy().tolist(), served.signature["n_features"], None, len(features))
    labels = table[label].tolist()
    with svc.engine.begin() as conn:
        conn.execute(
            insert(TrainingExample),
            [
                {"model_name": name, "features": row, "label": _plain(value), "source": "import"}
                for row, value in zip(matrix.tolist(), labels, strict=True)
            ],
        )
    return len(labels)


def _plain(value: Any) -> Any:
    """A JSON-able label: numpy scalars become Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def training_set(svc: Services, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The newest ``training_window_rows`` examples of a model, oldest first, and their window."""
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(
                TrainingExample.id,
                TrainingExample.created_at,
                TrainingExample.features,
                TrainingExample.label,
            )
            .where(TrainingExample.model_name == name)
            .order_by(TrainingExample.id.desc())
            .limit(svc.settings.training_window_rows)
        ).all()
    rows.reverse()
    x = np.asarray([r.features for r in rows], dtype=np.float64)
    y = np.asarray([r.label for r in rows])
    window = {}
    if rows:
        window = {
            "first_example_id": rows[0].id,
            "last_example_id": rows[-1].id,
            "from": rows[0].created_at.isoformat(),
            "to": rows[-1].created_at.isoformat(),
        }
    return x, y, window


def retrain(
    svc: Services, name: str, run_id: uuid.UUID | None = None, trigger: str = "manual"
) -> dict[str, Any]:
    """One training run (see the module docstring); returns its record."""
    run_id = run_id or uuid.uuid4()
    if not _claim(svc, run_id, name, trigger):
        # The same run asked for again (a redelivered message): it trains once.
        log.info("training run %s of %s already started; not training again", run_id, name)
        return run_record(svc, run_id)

    lock = svc.redis.lock(
        f"predq:lock:train:{name}", timeout=svc.settings.training_lock_seconds, blocking=False
    )
    if not lock.acquire():
        return _finish(svc, run_id, name, "skipped", "another training run of this model is in progress")
    try:
        return _train(svc, name, run_id)
    except Exception as exc:  # the run must end recorded, whatever the estimator raised
        log.exception("training run %s of %s failed", run_id, name)
        return _finish(svc, run_id, name, "failed", f"{type(exc).__name__}: {exc}"[:1000])
    finally:
        lock.release()


def _train(svc: Services, name: str, run_id: uuid.UUID) -> dict[str, Any]:
    settings = svc.settings
    champion, served = svc.registry.load(name, svc.registry.resolve(name).version)
    x, y, window = training_set(svc, name)
    if len(x) < settings.training_min_rows:
        return _finish(svc, run_id, name, "skipped",
                       f"{len(x)} training examples; at least {settings.training_min_rows} are needed",
                       parent_version=served.version, rows=len(x))  # fmt: skip
    classifier = served.signature["task"] == "classification"
    stratify = y if classifier and min(np.unique(y, return_counts=True)[1]) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings.training_holdout, random_state=0, stratify=stratify
    )
    names = served.signature["feature_names"]
    # Fitted on a DataFrame when the champion was, so the candidate keeps the feature names.
    candidate = clone(champion).fit(_frame(x_train, names), y_train)
    scores = {
        "candidate": _score(candidate, _frame(x_test, names), y_test, classifier),
        "champion": _score(champion, _frame(x_test, names), y_test, classifier),
    }
    key = "accuracy" if classifier else "rmse"
    gain = scores["candidate"][key] - scores["champion"][key]
    if not classifier:
        gain = -gain / max(scores["champion"][key], 1e-12)  # relative RMSE reduction
    better = gain >= settings.training_margin
    alias = "champion" if better else "challenger"
    lineage = {
        "parent_version": served.version,
        "training_run": str(run_id),
        "data_window": window,
        "rows": len(x),
        "train_rows": len(x_train),
        "holdout_rows": len(x_test),
        "params": {k: repr(v) for k, v in candidate.get_params(deep=False).items()},
    }
    candidate_version = _register(svc, name, served, candidate, scores["candidate"], lineage, x_train, alias)
    verb = "promoted to champion" if better else "kept as challenger"
    what = "accuracy gain" if classifier else "relative RMSE reduction"
    reason = (
        f"candidate v{candidate_version} {key} {scores['candidate'][key]:.4f} vs champion v{served.version} "
        f"{scores['champion'][key]:.4f} on {len(x_test)} held-out rows: {what} {gain:+.4f} "
        f"{'≥' if better else '<'} margin {settings.training_margin}; {verb}"
    )
    return _finish(svc, run_id, name, "promoted" if better else "kept", reason, parent_version=served.version,
                   candidate_version=candidate_version, rows=len(x), metrics=scores)  # fmt: skip


def _frame(x: np.ndarray, names: list[str] | None) -> Any:
    if names is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=names)


def _score(estimator: Any, x: Any, y: np.ndarray, classifier: bool) -> dict[str, float]:
    return quality_metrics(y, estimator.predict(x), classifier)


def quality_metrics(y: Any, predicted: Any, classifier: bool) -> dict[str, float]:
    """Accuracy and macro F1 for a classifier, RMSE and MAE for a regressor (retrains and feedback)."""
    if classifier:
        return {
            "accuracy": float(accuracy_score(y, predicted)),
            "f1_macro": float(f1_score(y, predicted, average="macro")),
        }
    return {
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": float(mean_absolute_error(y, predicted)),
    }


def _register(
    svc: Services,
    name: str,
    parent: Any,
    candidate: Any,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    x_train: np.ndarray,
    alias: str,
) -> int:
    """Store the candidate in the champion's format, with its metrics, lineage and a reference sample."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"candidate.{parent.format}"
        if parent.format == "skops":
            skops.io.dump(candidate, path)
        else:
            joblib.dump(candidate, path)
        served = svc.registry.register(
            name,
            path,
            metrics=metrics,
            trust=list(parent.trusted_types),
            reference=_frame(x_train, parent.signature["feature_names"]),
            lineage=lineage,
        )
    svc.registry.set_alias(
        name, alias, served.version, actor="retrain", reason=f"training run {lineage['training_run']}"
    )
    return served.version


def _finish(
    svc: Services, run_id: uuid.UUID, name: str, status: str, reason: str, **fields: Any
) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(status=status, reason=reason, completed_at=utcnow(), **fields)
        )
    TRAINING_RUNS.labels(name, status).inc()
    log.info(
        "training run %s of %s: %s: %s",
        run_id,
        name,
        status,
        reason,
        extra={"model": name, "run": str(run_id)},
    )
    return run_record(svc, run_id)


def start_run(svc: Services, name: str, trigger: str = "manual") -> uuid.UUID:
    """Record a queued run and send it to the training queue; returns its id.

    Recorded before it is sent, so a schedule looking again a moment later sees it.
    """
    svc.registry.resolve(name)  # 404 for an unknown model, before anything is queued
    run_id = uuid.uuid4()
    _record_queued(svc, run_id, name, trigger)
    svc.celery.send_task(RETRAIN, args=[name, str(run_id), trigger])
    return run_id


def _run_row(run_id: uuid.UUID, name: str, trigger: str, status: str) -> dict[str, Any]:
    return {"id": run_id, "model_name": name, "trigger": trigger, "status": status, "started_at": utcnow()}


def _record_queued(svc: Services, run_id: uuid.UUID, name: str, trigger: str) -> None:
    with svc.engine.begin() as conn:
        conn.execute(insert(TrainingRun), _run_row(run_id, name, trigger, "queued"))


def _claim(svc: Services, run_id: uuid.UUID, name: str, trigger: str) -> bool:
    """Mark the run running; False when it already started (or finished).

    A run queued by :func:`start_run` is claimed by an UPDATE; one asked for directly (the
    CLI's --here) has no row yet and is inserted running. Either way exactly one caller wins.
    """
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
            .values(status="running", started_at=utcnow())
        ).rowcount
    if claimed:
        return True
    try:
        with svc.engine.begin() as conn:
            conn.execute(insert(TrainingRun), _run_row(run_id, name, trigger, "running"))
    except IntegrityError:
        return False  # the row exists and is past queued
    return True


def set_schedule(svc: Services, name: str, every_seconds: float | None, on_drift: bool) -> None:
    """Retrain NAME every ``every_seconds`` (None: never on a schedule) and/or when drift is found."""
    svc.registry.require(name)
    with svc.engine.begin() as conn:
        conn.execute(
            update(Model)
            .where(Model.name == name)
            .values(retrain_every_seconds=every_seconds, retrain_on_drift=on_drift)
        )


def start_due_runs(svc: Services) -> list[str]:
    """Queue a run for each model whose schedule is due (its newest run started longer ago)."""
    now = utcnow()
    newest = (
        select(TrainingRun.model_name, func.max(TrainingRun.started_at).label("last"))
        .group_by(TrainingRun.model_name)
        .subquery()
    )
    with svc.engine.connect() as conn:
        models = conn.execute(
            select(Model.name, Model.retrain_every_seconds, newest.c.last)
            .outerjoin(newest, newest.c.model_name == Model.name)
            .where(Model.retrain_every_seconds.is_not(None))
        ).all()
    due = []
    for name, every, last in models:
        if last is not None and last.tzinfo is None:  # SQLite gives naive UTC
            last = last.replace(tzinfo=now.tzinfo)
        if last is None or (now - last).total_seconds() >= every:
            start_run(svc, name, "schedule")
            due.append(name)
    return due


def run_record(svc: Services, run_id: uuid.UUID) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        row = conn.execute(select(TrainingRun.__table__).where(TrainingRun.id == run_id)).mappings().one()
    return dict(row)


def runs(svc: Services, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """A model's newest training runs, newest first."""
    svc.registry.require(name)
    return newest_rows(svc.engine, TrainingRun, name, TrainingRun.started_at, limit)
