"""Run a model on a matrix and shape its answers as the public contract's outputs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def predict_outputs(estimator: Any, signature: dict[str, Any], matrix: np.ndarray) -> list[dict[str, Any]]:
    """One output per row: prediction, plus class probabilities for a probabilistic classifier.

    ``prediction`` always comes from ``estimator.predict`` so it equals what the model gives
    in-process, even for models whose ``predict`` is not the argmax of ``predict_proba``.
    """
    with warnings.catch_warnings():
        # Models fitted on a DataFrame warn when given a bare array; columns are already in
        # the fitted order (the signature's feature_names), so the warning says nothing new.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        predictions = np.asarray(estimator.predict(matrix)).tolist()
        if not signature.get("has_proba"):
            return [{"prediction": p} for p in predictions]
        probabilities = np.asarray(estimator.predict_proba(matrix)).tolist()
    classes = [str(c) for c in signature["classes"]]
    return [
        {"prediction": p, "probabilities": dict(zip(classes, probs, strict=True))}
        for p, probs in zip(predictions, probabilities, strict=True)
    ]
