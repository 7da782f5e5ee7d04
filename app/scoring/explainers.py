"""shap explainers, one per model family (app/registry/explainability.py says which route).

``tree``: shap's TreeExplainer on the model, on its raw output (for histogram gradient
boosting the decision function, one column per class with three or more; for trees and
forests that classify, the probabilities). ``boosted_trees``: gradient boosting handed to
TreeExplainer as shap's own tree-ensemble format, a dict of arrays, one output per raw score:
each tree's leaves times the learning rate in its own output's column (zeros elsewhere),
and the constant initial estimate as that output's base offset. shap's built-in reading of
GradientBoostingClassifier takes two classes only and assumes the log-loss prior; this one
takes any number of outputs and reads the offset off the model itself. ``linear``: shap's
LinearExplainer against a background (the version's reference sample, else the origin).

Each is built on a pipeline's final step; :func:`transformed` gives it its input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from app.registry.explainability import explainer_kind, final_step


def transformed(estimator: Any, matrix: np.ndarray) -> np.ndarray:
    """The rows as a pipeline's final step sees them (the rows themselves for a bare model)."""
    if isinstance(estimator, Pipeline):
        return np.asarray(estimator[:-1].transform(matrix.copy()), dtype=np.float64)
    return matrix


def build(estimator: Any, n_features: int, reference: Callable[[], Any]) -> Any:
    """An explainer for ``estimator`` (``shap_values`` and ``expected_value``, as shap's), or
    None when it has no exact one."""
    import shap  # noqa: PLC0415  (seconds to import: only when a batch asks)

    kind = explainer_kind(estimator)
    final = final_step(estimator)
    if kind == "tree":
        return shap.TreeExplainer(final, model_output="raw")
    if kind == "boosted_trees":
        return shap.TreeExplainer(boosted_ensemble(final, n_features))
    if kind == "linear":
        background = reference()
        if background is None:
            # No training rows kept: explain against the origin (the base value is the intercept).
            background = np.zeros((1, n_features))
        else:
            background = transformed(estimator, np.asarray(background, dtype=np.float64))
        return shap.LinearExplainer(final, shap.maskers.Independent(background, max_samples=200))
    return None


def boosted_ensemble(model: Any, n_features: int) -> dict[str, Any]:
    """A fitted GradientBoostingClassifier or GradientBoostingRegressor in shap's tree-ensemble
    format: one output per raw score (one for a regressor or two classes, else one per class)."""
    stages = model.estimators_  # (n_stages, outputs) regression trees
    outputs = stages.shape[1]
    trees = [
        _tree(stage.tree_, k, outputs, model.learning_rate) for k in range(outputs) for stage in stages[:, k]
    ]
    return {
        "trees": trees,
        "base_offset": _initial_raw(model, n_features),
        "tree_output": "raw_value",
        "input_dtype": np.float32,  # as the model reads its input
        "internal_dtype": np.float64,
    }


def _tree(tree: Any, output: int, outputs: int, scale: float) -> dict[str, np.ndarray]:
    values = np.zeros((tree.node_count, outputs))
    values[:, output] = tree.value[:, 0, 0] * scale
    return {
        "children_left": tree.children_left,
        "children_right": tree.children_right,
        "children_default": tree.children_left,  # no missing values reach a model
        "features": tree.feature,
        "thresholds": tree.threshold.astype(np.float64),
        "values": values,
        "node_sample_weight": tree.weighted_n_node_samples.astype(np.float64),
    }


def _initial_raw(model: Any, n_features: int) -> np.ndarray:
    """The constant initial raw prediction of each output: the model's raw output on one row
    less its trees' share there (read off the model rather than re-derived from its loss)."""
    row = np.zeros((1, n_features), dtype=np.float32)
    with warnings.catch_warnings():
        # A model fitted on a DataFrame warns of a bare array; a row of zeros has no order to miss.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        raw = model.decision_function(row) if is_classifier(model) else model.predict(row)
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    trees = [
        sum(float(stage.predict(row)[0]) for stage in model.estimators_[:, k])
        for k in range(model.estimators_.shape[1])
    ]
    return np.asarray(raw - model.learning_rate * np.asarray(trees), dtype=np.float64)
