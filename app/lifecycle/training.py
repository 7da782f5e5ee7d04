"""Retraining: fit a fresh copy of the champion and promote it only when it is better.

A run (:func:`retrain`) checks the newest ``training_window_rows`` examples of the model's
training set (imports not dropped, and feedback; app/lifecycle/evaluation.py), clones the champion's
estimator (``sklearn.base.clone``: same class and parameters, no fitted state), fits it,
scores candidate and champion on the model's fixed evaluation set (and, beside it, on a
held-out split of the new data), registers the candidate with its metrics and lineage, and
points ``champion`` at it only when it beats the champion by ``training_margin`` *and* a
paired test on the evaluation rows rejects at ``training_alpha``; otherwise it becomes
``challenger``. Every run is a ``training_runs`` row with its decision, the numbers behind
it and the imports it trained on.

Each import is a ``training_imports`` row that can be dropped; a model's first import,
when it has no evaluation set yet, gives ``training_eval_share`` of its rows to one.

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
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.celery_app import RETRAIN
from app.db import Model, TrainingExample, TrainingImport, TrainingRun, newest_rows, utcnow
from app.errors import InvalidInput, NotFound
from app.lifecycle import evaluation
from app.metrics import TRAINING_RUNS
from app.rqueue import training_lock_key
from app.services import Services
from app.signature import in_feature_order, rows_to_matrix

log = logging.getLogger(__name__)


def import_examples(svc: Services, name: str, table: Any, label: str, source: str = "") -> dict[str, Any]:
    """Add the rows of ``table`` (a DataFrame) to the model's training set, as one import.

    Features are taken by the champion's feature names, or as the first columns in order
    when it has none; ``label`` names the target column. When the model has no evaluation
    set yet, ``training_eval_share`` of these rows become it (and are not trained on).
    Returns the import: its id, the rows trained on and those given to the evaluation set.
    """
    served = svc.registry.resolve(name)
    matrix, labels = _labeled_rows(table, label, served.signature)
    train = np.arange(len(labels))
    fixed = evaluation.latest_set(svc, name)
    if fixed is None and len(labels) >= 10:
        classifier = served.signature["task"] == "classification"
        stratify = labels if classifier and min(np.unique(labels, return_counts=True)[1]) >= 2 else None
        train, held = train_test_split(
            train, test_size=svc.settings.training_eval_share, random_state=0, stratify=stratify
        )
        train.sort()
        held_labels = [_plain(v) for v in labels[held]]
        carved = f"carved from {source or 'the first import'}"
        version = evaluation.store_set(svc, name, matrix[held], held_labels, carved)
        fixed = evaluation.EvalRows(version, matrix[held], labels[held])
    evaluation_rows = len(labels) - len(train)
    problems, checks = evaluation.data_problems(matrix[train], labels[train], fixed, served.signature)
    with svc.engine.begin() as conn:
        import_id = conn.execute(
            insert(TrainingImport).returning(TrainingImport.id),
            {"model_name": name, "source": source[:1000], "rows": len(train),
             "checks": checks | {"problems": problems}},
        ).scalar_one()  # fmt: skip
        conn.execute(
            insert(TrainingExample),
            [
                {"model_name": name, "features": matrix[i].tolist(), "label": _plain(labels[i]),
                 "source": "import", "import_id": import_id}
                for i in train
            ],
        )  # fmt: skip
    return {
        "id": import_id,
        "rows": len(train),
        "evaluation_rows": evaluation_rows,
        "checks": checks,
        "problems": problems,
    }


def register_evaluation_set(
    svc: Services, name: str, table: Any, label: str, source: str = ""
) -> dict[str, Any]:
    """A new version of the model's evaluation set from ``table`` (a DataFrame); returns it."""
    served = svc.registry.resolve(name)
    matrix, labels = _labeled_rows(table, label, served.signature)
    version = evaluation.store_set(svc, name, matrix, [_plain(v) for v in labels], source)
    return {"model": name, "version": version, "rows": len(labels)}


def _labeled_rows(table: Any, label: str, signature: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if label not in table.columns:
        raise InvalidInput(f"no column {label!r} in the training data", column=label)
    features = in_feature_order(table.drop(columns=[label]), signature, "the training data")
    if signature["feature_names"] is None:
        features = features.iloc[:, : signature["n_features"]]
    matrix = rows_to_matrix(features.to_numpy().tolist(), signature["n_features"], None, len(features))
    return matrix, np.asarray(table[label].tolist())


def imports(svc: Services, name: str) -> list[dict[str, Any]]:
    """A model's imports, newest first, with their checks and whether they were dropped."""
    svc.registry.require(name)
    return newest_rows(svc.engine, TrainingImport, name, TrainingImport.id, 1000)


def drop_import(svc: Services, name: str, import_id: int) -> dict[str, Any]:
    """Take an import's rows out of every later run (they stay stored, marked dropped)."""
    svc.registry.require(name)
    with svc.engine.begin() as conn:
        found = conn.execute(
            update(TrainingImport)
            .where(TrainingImport.id == import_id, TrainingImport.model_name == name)
            .values(dropped_at=func.coalesce(TrainingImport.dropped_at, utcnow()))
            .returning(TrainingImport.id)
        ).first()
    if found is None:
        raise NotFound(f"model {name!r} has no import {import_id}", model=name, import_id=import_id)
    return next(i for i in imports(svc, name) if i["id"] == import_id)


def _plain(value: Any) -> Any:
    """A JSON-able label: numpy scalars become Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def training_set(svc: Services, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The newest ``training_window_rows`` examples of a model (none of a dropped import),
    oldest first, and their window (with the imports they came from)."""
    dropped = select(TrainingImport.id).where(TrainingImport.dropped_at.is_not(None))
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(
                TrainingExample.id,
                TrainingExample.created_at,
                TrainingExample.features,
                TrainingExample.label,
                TrainingExample.import_id,
            )
            .where(
                TrainingExample.model_name == name,
                or_(TrainingExample.import_id.is_(None), TrainingExample.import_id.not_in(dropped)),
            )
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
            "imports": sorted({r.import_id for r in rows if r.import_id is not None}),
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

    lock = svc.redis.lock(training_lock_key(name), timeout=svc.settings.training_lock_seconds, blocking=False)
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
    base = {"parent_version": served.version, "rows": len(x), "imports": window.get("imports", [])}
    if len(x) < settings.training_min_rows:
        reason = f"{len(x)} training examples; at least {settings.training_min_rows} are needed"
        return _finish(svc, run_id, name, "skipped", reason, **base)
    fixed = evaluation.latest_set(svc, name)
    problems, checks = evaluation.data_problems(x, y, fixed, served.signature)
    if problems:
        return _finish(
            svc, run_id, name, "rejected_data", "; ".join(problems), metrics={"checks": checks}, **base
        )
    classifier = served.signature["task"] == "classification"
    stratify = y if classifier and min(np.unique(y, return_counts=True)[1]) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings.training_holdout, random_state=0, stratify=stratify
    )
    names = served.signature["feature_names"]
    # Fitted on a DataFrame when the champion was, so the candidate keeps the feature names.
    candidate = clone(champion).fit(_frame(x_train, names), y_train)
    # Judged on the fixed evaluation set when there is one, else on the held-out new rows.
    judged_x, judged_y = (fixed.x, fixed.y) if fixed is not None else (x_test, y_test)
    judged_on = f"evaluation set v{fixed.version}" if fixed is not None else "held-out new rows"
    predictions = {
        "candidate": np.asarray(candidate.predict(_frame(judged_x, names))),
        "champion": np.asarray(champion.predict(_frame(judged_x, names))),
    }
    judged_y = _typed_like(judged_y, predictions["champion"])
    scores = {who: quality_metrics(judged_y, predicted, classifier) for who, predicted in predictions.items()}
    test, p_value = evaluation.paired_test(
        judged_y, predictions["champion"], predictions["candidate"], classifier
    )
    key = "accuracy" if classifier else "rmse"
    gain = scores["candidate"][key] - scores["champion"][key]
    if not classifier:
        gain = -gain / max(scores["champion"][key], 1e-12)  # relative RMSE reduction
    better = gain >= settings.training_margin and p_value < settings.training_alpha
    alias = "champion" if better else "challenger"
    metrics = {
        **scores,
        "judged_on": {"what": judged_on, "rows": len(judged_y), "test": test, "p_value": p_value},
        "holdout": {
            "rows": len(y_test),
            "candidate": _score(candidate, _frame(x_test, names), y_test, classifier),
            "champion": _score(champion, _frame(x_test, names), y_test, classifier),
        },
        "checks": checks,
    }
    lineage = {
        "parent_version": served.version,
        "training_run": str(run_id),
        "data_window": window,
        "rows": len(x),
        "train_rows": len(x_train),
        "holdout_rows": len(x_test),
        "evaluation_set": fixed.version if fixed is not None else None,
        "params": {k: repr(v) for k, v in candidate.get_params(deep=False).items()},
    }
    candidate_version = _register(svc, name, served, candidate, scores["candidate"], lineage, x_train, alias)
    verb = "promoted to champion" if better else "kept as challenger"
    what = "accuracy gain" if classifier else "relative RMSE reduction"
    reason = (
        f"candidate v{candidate_version} {key} {scores['candidate'][key]:.4f} vs champion v{served.version} "
        f"{scores['champion'][key]:.4f} on {len(judged_y)} rows of the {judged_on}: {what} {gain:+.4f} "
        f"{'≥' if gain >= settings.training_margin else '<'} margin {settings.training_margin}, "
        f"{test} p={p_value:.3g} {'<' if p_value < settings.training_alpha else '≥'} alpha "
        f"{settings.training_alpha}; {verb}"
    )
    return _finish(svc, run_id, name, "promoted" if better else "kept", reason,
                   candidate_version=candidate_version, metrics=metrics, **base)  # fmt: skip


def _typed_like(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Stored labels compared with predictions: as the predictions' type (JSON may have made
    ints of a float target, strings stay strings)."""
    try:
        return labels.astype(predictions.dtype)
    except (TypeError, ValueError):
        return labels


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
