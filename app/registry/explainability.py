"""Which models predq explains, by which route, and what output an explanation adds up to.

An explanation is exact or it is not given: its ``base_value`` plus its contributions is the
model's own output for the row, to 1e-6. Registration marks a version explainable only when
one of these routes is exact for it (app/scoring/explainers.py builds them):

- ``tree``: shap's TreeExplainer on the model itself. Decision trees, random forests and
  extra trees (a classifier's probabilities, a regressor's prediction), and histogram
  gradient boosting (its raw output: a classifier's decision function, one per class with
  three or more; a regressor's prediction when its loss keeps the identity link, so not
  poisson or gamma) that has no categorical features, whose bitset splits shap cannot read.
- ``boosted_trees``: gradient boosting (GradientBoostingClassifier, binary or multiclass,
  and GradientBoostingRegressor). Each raw output is its initial estimate plus the learning
  rate times its own trees, so each is explained by TreeSHAP over its own trees. Only when
  the initial estimate is a constant (the default, or ``init="zero"``): an ``init``
  estimator makes it a function of the row that trees alone do not explain.
- ``linear``: shap's LinearExplainer for a linear model (a classifier's decision function,
  one per class with three or more; a regressor's prediction, one target).
- a pipeline is explained through its final step when every step before it maps features
  one to one (scalers), so each transformed feature is an input feature.

The signature stores the route (``explainer``) and the output it adds up to
(``explained_output``). A submit asking for explanations is decided on the stored
signature by :func:`refusal`, never by loading the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)

_TREES = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
)
_BOOSTED = (GradientBoostingClassifier, GradientBoostingRegressor)
_HISTOGRAM = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
# Losses whose raw output is the prediction itself (poisson and gamma predict exp(raw)).
_IDENTITY_LOSSES = {"squared_error", "absolute_error", "quantile"}

# Steps that map each feature to one feature, so an explanation of the final step on the
# transformed features is an explanation of the input's features, name for name.
_ONE_TO_ONE = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)

# Before explained_output was recorded, registration marked every tree, forest, gradient
# boosting and linear model explainable (and pipelines ending in one). Of those, these
# types are explained exactly whatever their parameters; a gradient-boosted model (or a
# pipeline ending in trees) may have an ``init`` estimator, which the stored signature
# cannot tell, so such a version is refused until it is registered again.
_EXACT_UNDER_THE_FIRST_RULE = {cls.__name__ for cls in (*_TREES, ExtraTreeClassifier, ExtraTreeRegressor)}


def final_step(estimator: Any) -> Any:
    """The estimator a pipeline's explanation is computed on (the model itself otherwise),
    or None when a step before it does not map features one to one."""
    if not isinstance(estimator, Pipeline):
        return estimator
    *steps, (_, final) = estimator.steps
    one_to_one = all(isinstance(step, _ONE_TO_ONE) or step in ("passthrough", None) for _, step in steps)
    return final if one_to_one else None


def explainer_kind(estimator: Any) -> str | None:
    """``tree``, ``boosted_trees`` or ``linear`` when an exact explanation exists (see the
    module docstring), else None."""
    final = final_step(estimator)
    if final is None or getattr(final, "n_outputs_", 1) != 1:
        return None
    if isinstance(final, _TREES):
        return "tree"
    if isinstance(final, _HISTOGRAM):
        categorical = getattr(final, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            return None
        identity = is_classifier(final) or final.loss in _IDENTITY_LOSSES
        return "tree" if identity else None
    if isinstance(final, _BOOSTED):
        return "boosted_trees" if _constant_init(final.init_) else None
    if isinstance(final, (LinearModel, LinearClassifierMixin)):
        coef = np.asarray(getattr(final, "coef_", np.zeros(0)))
        one_target = is_classifier(final) or coef.ndim == 1 or coef.shape[0] == 1
        return "linear" if one_target and hasattr(final, "intercept_") else None
    return None


def explained_output(estimator: Any) -> str | None:
    """The method whose output an explanation adds up to: ``predict_proba`` (trees and
    forests that classify), ``decision_function`` (other classifiers) or ``predict``
    (regressors); None when the model is not explained."""
    kind = explainer_kind(estimator)
    if kind is None:
        return None
    final = final_step(estimator)
    if not is_classifier(final):
        return "predict"
    return "predict_proba" if isinstance(final, _TREES) else "decision_function"


def _constant_init(init: Any) -> bool:
    """Whether gradient boosting's initial raw prediction is the same for every row."""
    if isinstance(init, str):
        return init == "zero"
    if isinstance(init, DummyClassifier):
        return init.strategy != "stratified"  # stratified draws a random class per row
    return isinstance(init, DummyRegressor)


_EXPLAINED = (
    "predq explains trees, forests, gradient boosting (with a constant init), histogram gradient"
    " boosting (numeric features; a regressor's loss with the identity link), linear models, and"
    " pipelines of scalers ending in one"
)


def refusal(signature: dict[str, Any]) -> str | None:
    """Why a version with this stored signature cannot be explained; None when it can."""
    estimator = signature.get("estimator", "this model")
    kind = signature.get("explainer")
    if "explained_output" in signature:  # decided at registration by the rule above
        return None if kind else f"{estimator} has no exact explanation; {_EXPLAINED}"
    if kind == "linear" or (kind == "tree" and estimator in _EXACT_UNDER_THE_FIRST_RULE):
        return None
    return (
        f"{estimator} was registered before predq checked which models it explains exactly (a"
        " gradient-boosted model may start from an init estimator that trees cannot explain);"
        f" register it again to have it checked. {_EXPLAINED}"
    )
