"""Explanations: each feature's contribution to a row's output, by shap, for a batch in one call.

``TreeExplainer`` for trees, forests and gradient boosting, ``LinearExplainer`` for linear
models (its background is the version's reference sample, the training rows kept for
drift checks, or when it has none all-zero features, so the base value is the
intercept), and for a pipeline the explainer of its final step on the transformed
features, which map one to one to the inputs (app/registry/signature.py ``explainer_kind``).
Explainers are built once per worker process and model version, like the model. shap is
imported only when a batch asks for explanations (it takes seconds to import).

A row's explanation: ``base_value`` plus the sum of ``contributions`` is the model's output
for the row: for a classifier, the output of the predicted class (``class``) as the model
computes it (a forest's probability; log-odds for a linear or boosted classifier with two
classes, where the output explained is the second class's), for a regressor the prediction.
Asked for every class (``explain_classes: "all"``), a classifier's explanation also holds
``by_class``: each class's own base value and contributions, by class label (the full
matrix; a model with one output, as above, has the one class it explains).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from app.errors import PredqError


class ExplanationFailed(PredqError):
    status, code = 500, "explanation_failed"


_EXPLAINERS: dict[tuple[str, int, str], Any] = {}
_LOCK = threading.Lock()


def explanations(
    estimator: Any,
    served: Any,
    matrix: np.ndarray,
    predictions: list[Any],
    reference: Any,
    every_class: list[bool] | None = None,
) -> list[dict[str, Any]]:
    """One explanation per row of ``matrix`` (``predictions`` are the rows' predicted values).

    ``reference`` gives the version's reference sample when a linear explainer needs it.
    A row whose ``every_class`` is true gets ``by_class`` too (classifiers only).
    """
    signature = served.signature
    final, rows = _final_step(estimator, matrix)
    explainer = _explainer(served, final, estimator, reference)
    values = np.asarray(explainer.shap_values(rows))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    names = signature["feature_names"] or [str(j) for j in range(signature["n_features"])]
    classes = signature["classes"]
    out = []
    for i in range(len(rows)):
        if values.ndim == 3:  # one column per class: explain the predicted one
            k = classes.index(predictions[i]) if classes and predictions[i] in classes else 0
            row, b, label = values[i, :, k], base[k], classes[k] if classes else None
        else:  # one output: a regressor, or a two-class model's second class
            row, b = values[i], base[0]
            label = classes[-1] if classes else None
        explanation = _explained(row, b, names)
        if label is not None:
            explanation["class"] = label
            if every_class is not None and every_class[i]:
                explanation["by_class"] = _by_class(values[i], base, classes, names)
        out.append(explanation)
    return out


def _by_class(values: np.ndarray, base: np.ndarray, classes: list[Any], names: list[str]) -> dict[str, Any]:
    """One row's explanation of every output, by class label (as JSON object keys: text)."""
    if values.ndim == 1:  # one output: the second class's, as above
        explained = [(classes[-1], values, base[0])]
    else:
        explained = [(label, values[:, k], base[k]) for k, label in enumerate(classes)]
    return {str(label): _explained(row, b, names) for label, row, b in explained}


def _explained(values: np.ndarray, base: Any, names: list[str]) -> dict[str, Any]:
    """One output's explanation: its base value and each feature's contribution."""
    return {
        "base_value": float(base),
        "contributions": {name: float(v) for name, v in zip(names, values, strict=True)},
    }


def _final_step(estimator: Any, matrix: np.ndarray) -> tuple[Any, np.ndarray]:
    if isinstance(estimator, Pipeline):
        return estimator.steps[-1][1], estimator[:-1].transform(matrix.copy())
    return estimator, matrix


def _explainer(served: Any, final: Any, estimator: Any, reference: Any) -> Any:
    key = (served.name, served.version, served.sha256)
    with _LOCK:
        cached = _EXPLAINERS.get(key)
    if cached is not None:
        return cached
    import shap  # noqa: PLC0415  (seconds to import: only when a batch asks)

    kind = served.signature.get("explainer")
    if kind == "tree":
        made = shap.TreeExplainer(final)
    elif kind == "linear":
        background = reference()
        if background is None:
            # No training rows kept: explain against the origin (the base value is the intercept).
            background = np.zeros((1, served.signature["n_features"]))
        else:
            _, background = _final_step(estimator, np.asarray(background, dtype=np.float64))
        made = shap.LinearExplainer(final, shap.maskers.Independent(background, max_samples=200))
    else:
        raise ExplanationFailed(f"no explainer for {served.signature.get('estimator')}")
    with _LOCK:
        _EXPLAINERS[key] = made
    return made
