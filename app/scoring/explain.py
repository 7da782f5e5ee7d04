"""Explanations: each feature's contribution to a row's output, by shap, for a batch in one call.

The explainer comes from app/scoring/explainers.py (TreeSHAP for trees, forests and both
kinds of gradient boosting, shap's linear explainer for linear models, a pipeline's final
step on the transformed features, which map one to one to the inputs), chosen by
app/registry/explainability.py. Explainers are built once per worker process and model
version, like the model, and held under the same memory budget (app/registry/memory.py).
shap is imported only when a batch asks (it takes seconds).

A row's explanation: ``base_value`` plus the sum of ``contributions`` is the model's output
for the row (the signature's ``explained_output``), to 1e-6: for a classifier, the output of
the predicted class (``class``) as the model computes it (a forest's probability; a boosted or
linear model's decision function, the log-odds of logistic loss, where with two classes the
output explained is the second class's), for a regressor the prediction. Asked for every
class (``explain_classes: "all"``), a classifier's explanation also holds ``by_class``: each
class's own base value and contributions, by class label (the full matrix; a model with one
output, as above, has the one class it explains).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import PredqError
from app.registry.memory import VersionCache, array_bytes
from app.scoring import explainers


class ExplanationFailed(PredqError):
    status, code = 500, "explanation_failed"


def explanations(
    estimator: Any,
    served: Any,
    matrix: np.ndarray,
    predictions: list[Any],
    reference: Any,
    every_class: list[bool] | None = None,
    cache: VersionCache[Any, Any] | None = None,
) -> list[dict[str, Any]]:
    """One explanation per row of ``matrix`` (``predictions`` are the rows' predicted values).

    ``reference`` gives the version's reference sample when a linear explainer needs it.
    A row whose ``every_class`` is true gets ``by_class`` too (classifiers only). The explainer
    is kept in ``cache`` (the registry's ``explainers``, sized by the arrays it holds), if given.
    """
    signature = served.signature
    rows = explainers.transformed(estimator, matrix)
    explainer = _explainer(served, estimator, reference, cache)
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


def _explainer(served: Any, estimator: Any, reference: Any, cache: VersionCache[Any, Any] | None) -> Any:
    key = (served.name, served.version, served.sha256)
    found = cache.get(key) if cache is not None else None
    if found is not None:
        return found
    made = explainers.build(estimator, served.signature["n_features"], reference)
    if made is None:  # submit refuses such a version (explainability.refusal): never reached
        raise ExplanationFailed(f"no exact explainer for {served.signature.get('estimator')}")
    if cache is not None:
        cache.put(key, made, array_bytes(made))
    return made
