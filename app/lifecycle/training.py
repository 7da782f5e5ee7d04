"""Retraining: fit a fresh copy of the champion and promote it only when it is better.

A run (:func:`retrain`) checks the newest ``training_window_rows`` examples of the model's
training set (imports neither dropped nor quarantined, and feedback; app/lifecycle/evaluation.py),
clones the champion's estimator (``sklearn.base.clone``: same class and parameters, no fitted
state), fits it,
scores candidate and champion on the model's fixed evaluation set (and, beside it, on a
held-out split of the new data), registers the candidate with its metrics and lineage, and
points ``champion`` at it only when it beats the champion by ``training_margin`` *and* a
paired test on the evaluation rows rejects at ``training_alpha``; otherwise it becomes
``challenger``. Every run is a ``training_runs`` row with its decision, the numbers behind
it, the imports it trained on and the quarantined ones it left out.

The training data is app/lifecycle/training_data.py; the runs' rows and schedules are
app/lifecycle/training_runs.py.

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

from app.lifecycle import compiling, evaluation
from app.lifecycle.training_data import quarantined_imports, training_set
from app.lifecycle.training_runs import claim, finish, run_record
from app.services import Services

log = logging.getLogger(__name__)


def training_lock_key(name: str) -> str:
    """The Redis lock one training run of a model holds: one run per model at a time."""
    return f"predq:lock:train:{name}"


def retrain(
    svc: Services, name: str, run_id: uuid.UUID | None = None, trigger: str = "manual"
) -> dict[str, Any]:
    """One training run (see the module docstring); returns its record."""
    run_id = run_id or uuid.uuid4()
    if not claim(svc, run_id, name, trigger):
        # The same run asked for again (a redelivered message): it trains once.
        log.info("training run %s of %s already started; not training again", run_id, name)
        return run_record(svc, run_id)

    lock = svc.redis.lock(training_lock_key(name), timeout=svc.settings.training_lock_seconds, blocking=False)
    if not lock.acquire():
        return finish(svc, run_id, name, "skipped", "another training run of this model is in progress")
    try:
        return _train(svc, name, run_id)
    except Exception as exc:  # the run must end recorded, whatever the estimator raised
        log.exception("training run %s of %s failed", run_id, name)
        return finish(svc, run_id, name, "failed", f"{type(exc).__name__}: {exc}"[:1000])
    finally:
        lock.release()


def _train(svc: Services, name: str, run_id: uuid.UUID) -> dict[str, Any]:
    settings = svc.settings
    champion, served = svc.registry.load(name, svc.registry.resolve(name).version)
    x, y, window = training_set(svc, name)
    base = {"parent_version": served.version, "rows": len(x), "imports": window.get("imports", []),
            "quarantined_imports": quarantined_imports(svc, name)}  # fmt: skip
    if len(x) < settings.training_min_rows:
        reason = f"{len(x)} training examples; at least {settings.training_min_rows} are needed"
        return finish(svc, run_id, name, "skipped", reason, **base)
    fixed = evaluation.latest_set(svc, name)
    problems, checks = evaluation.data_problems(x, y, fixed, served.signature)
    if problems:
        return finish(
            svc, run_id, name, "rejected_data", "; ".join(problems), metrics={"checks": checks}, **base
        )
    classifier = served.signature["task"] == "classification"
    stratify = y if classifier and min(np.unique(y, return_counts=True)[1]) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings.training_holdout, random_state=0, stratify=stratify
    )
    names = served.signature["feature_names"]
    # Fitted on a DataFrame when the champion was, so the candidate keeps the feature names.
    candidate = clone(champion).fit(evaluation.model_input(x_train, names), y_train)
    # Judged on the fixed evaluation set when there is one, else on the held-out new rows.
    judged_x, judged_y = (fixed.x, fixed.y) if fixed is not None else (x_test, y_test)
    judged_on = f"evaluation set v{fixed.version}" if fixed is not None else "held-out new rows"
    predictions = {
        "candidate": np.asarray(candidate.predict(evaluation.model_input(judged_x, names))),
        "champion": np.asarray(champion.predict(evaluation.model_input(judged_x, names))),
    }
    judged_y = evaluation.typed_like(judged_y, predictions["champion"])
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
            "candidate": _score(candidate, evaluation.model_input(x_test, names), y_test, classifier),
            "champion": _score(champion, evaluation.model_input(x_test, names), y_test, classifier),
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
    return finish(svc, run_id, name, "promoted" if better else "kept", reason,
                   candidate_version=candidate_version, metrics=metrics, **base)  # fmt: skip


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
            reference=evaluation.model_input(x_train, parent.signature["feature_names"]),
            lineage=lineage,
        )
    # Compiled (COMPILE_ON_REGISTER) before it serves, so it never serves half a minute uncompiled.
    compiling.after_registration(svc, name, served.version)
    svc.registry.set_alias(
        name, alias, served.version, actor="retrain", reason=f"training run {lineage['training_run']}"
    )
    return served.version
