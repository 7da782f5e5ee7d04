"""Run a model on a matrix and shape its answers as the public contract's outputs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.ensemble._forest import ForestClassifier
from sklearn.tree import DecisionTreeClassifier

# Estimators whose predict() is, in scikit-learn's own code, classes_.take(argmax(proba)):
# for them one predict_proba call gives both outputs, exactly.
_PREDICT_IS_ARGMAX_PROBA = (ForestClassifier, DecisionTreeClassifier)


def predict_outputs(estimator: Any, signature: dict[str, Any], matrix: np.ndarray) -> list[dict[str, Any]]:
    """One output per row: prediction, plus class probabilities for a probabilistic classifier.

    ``prediction`` equals ``estimator.predict`` exactly: it is computed by ``predict`` unless
    the estimator's own predict is the argmax of its probabilities (forests, trees), where
    computing it from the one predict_proba call saves running the model twice.
    """
    with warnings.catch_warnings():
        # Models fitted on a DataFrame warn when given a bare array; columns are already in
        # the fitted order (the signature's feature_names), so the warning says nothing new.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if not signature.get("has_proba"):
            return [{"prediction": p} for p in np.asarray(estimator.predict(matrix)).tolist()]
        proba = np.asarray(estimator.predict_proba(matrix))
        if _argmax_is_prediction(estimator):
            predictions = estimator.classes_.take(np.argmax(proba, axis=1)).tolist()
        else:
            predictions = np.asarray(estimator.predict(matrix)).tolist()
        probabilities = proba.tolist()
    classes = [str(c) for c in signature["classes"]]
    return [
        {"prediction": p, "probabilities": dict(zip(classes, probs, strict=True))}
        for p, probs in zip(predictions, probabilities, strict=True)
    ]


def _argmax_is_prediction(estimator: Any) -> bool:
    return isinstance(estimator, _PREDICT_IS_ARGMAX_PROBA) and getattr(estimator, "n_outputs_", 1) == 1
