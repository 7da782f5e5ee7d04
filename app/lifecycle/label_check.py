"""Before an import is trained on or carved into an evaluation set: do its labels agree with
the serving version as well as labels it has seen?

Wrong labels do not announce themselves: an import of shuffled labels has the right classes in
the right proportions. But the serving version has skill, and skill shows on true labels.
Two one-sided tests at ``import_label_alpha`` (1e-6 by default), on the import's rows scored
by the serving version:

- **against chance**, needing nothing else: a classifier's agreement with the labels against
  the agreement expected if labels and predictions were independent with the import's own
  label and prediction distributions (Σ p_label(c)·p_predicted(c)), by a binomial test; a
  regressor's predictions against the targets by Pearson's correlation, whose null is zero.
  Not showing skill at that level quarantines: shuffled labels are caught at any small alpha,
  and a model with any skill shows it on a few hundred true labels;
- **against the model's own figure**, when it has one: its accuracy on the evaluation set
  (Fisher's exact test, the import's accuracy lower) or its absolute errors there
  (Mann-Whitney U, the import's larger); else the accuracy or RMSE recorded at registration
  (a binomial test, a t-test on squared errors). Rejecting quarantines: "far worse" than on
  rows whose labels were trusted, the labels are wrong or the relation has changed.

A quarantined import is kept, with the reason and the figures, but neither trained on nor
carved until an admin accepts it (app/lifecycle/training_data.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from app.lifecycle.evaluation import EvalRows, model_input, typed_like


@dataclass(frozen=True)
class LabelCheck:
    """The check's verdict: quarantined or not, why, and every figure behind it."""

    quarantined: bool
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def check_labels(
    estimator: Any,
    signature: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    alpha: float,
    evaluation: EvalRows | None = None,
    metrics: dict[str, Any] | None = None,
    who: str = "the serving version",
) -> LabelCheck:
    """Score the import's rows ``x`` with ``estimator`` (``who``: the serving version) against its
    labels ``y``; ``evaluation`` (its evaluation set) or else ``metrics`` (recorded at
    registration) give the model's own figure."""
    names = signature["feature_names"]
    predicted = np.asarray(estimator.predict(model_input(x, names)))
    y = typed_like(y, predicted)
    if signature["task"] == "classification":
        figures = _classifier_figures(predicted, y)
        own = _own_accuracy(estimator, names, evaluation, metrics, predicted, y)
    else:
        figures = _regressor_figures(predicted, y)
        own = _own_errors(estimator, names, evaluation, metrics, predicted, y)
    figures = {"alpha": alpha, "rows": len(y), **figures}
    if own is not None:
        figures["against_own_figure"] = own
    reasons = []
    if not figures["p_value"] < alpha:
        reasons.append(_chance_reason(figures, alpha, who))
    if own is not None and own["p_value"] < alpha:
        reasons.append(_worse_reason(own, alpha, who))
    if reasons:
        reason = (
            "; ".join(reasons)
            + ": the labels are wrong, or the relation between features and label has changed"
        )
        return LabelCheck(True, reason, figures)
    return LabelCheck(False, "", figures)


def _classifier_figures(predicted: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n = len(y)
    hits = int(np.sum(predicted == y))
    labels, label_counts = np.unique(y.astype(str), return_counts=True)
    guesses = dict(zip(*np.unique(predicted.astype(str), return_counts=True), strict=True))
    chance = (
        float(sum(c * guesses.get(label, 0) for label, c in zip(labels, label_counts, strict=True))) / n**2
    )
    # With one label predicted for every row, agreement cannot tell skill from chance.
    p = float(stats.binomtest(hits, n, chance, alternative="greater").pvalue) if 0 < chance < 1 else 1.0
    return {"test": "binomial", "agreement": hits / n, "chance": chance, "p_value": p}


def _regressor_figures(predicted: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    predicted, y = predicted.astype(np.float64), y.astype(np.float64)
    if len(y) < 3 or np.ptp(predicted) == 0 or np.ptp(y) == 0:
        return {"test": "pearson", "correlation": None, "p_value": 1.0}  # no correlation to test
    result = stats.pearsonr(predicted, y, alternative="greater")
    return {"test": "pearson", "correlation": float(result.statistic), "p_value": float(result.pvalue)}


def _own_accuracy(
    estimator: Any,
    names: list[str] | None,
    evaluation: EvalRows | None,
    metrics: dict[str, Any] | None,
    predicted: np.ndarray,
    y: np.ndarray,
) -> dict[str, Any] | None:
    hits, n = int(np.sum(predicted == y)), len(y)
    if evaluation is not None and len(evaluation.y):
        on_set = np.asarray(estimator.predict(model_input(evaluation.x, names)))
        own_hits = int(np.sum(on_set == typed_like(evaluation.y, on_set)))
        table = [[hits, n - hits], [own_hits, len(on_set) - own_hits]]
        p = float(stats.fisher_exact(table, alternative="less").pvalue)
        where = f"evaluation set v{evaluation.version} ({len(on_set)} rows)"
        return {"on": where, "test": "fisher_exact", "accuracy": own_hits / len(on_set),
                "import_accuracy": hits / n, "p_value": p}  # fmt: skip
    claimed = (metrics or {}).get("accuracy")
    if isinstance(claimed, int | float) and 0 < claimed <= 1:
        p = float(stats.binomtest(hits, n, float(claimed), alternative="less").pvalue)
        return {"on": "its registration metrics", "test": "binomial", "accuracy": float(claimed),
                "import_accuracy": hits / n, "p_value": p}  # fmt: skip
    return None


def _own_errors(
    estimator: Any,
    names: list[str] | None,
    evaluation: EvalRows | None,
    metrics: dict[str, Any] | None,
    predicted: np.ndarray,
    y: np.ndarray,
) -> dict[str, Any] | None:
    errors = np.abs(predicted.astype(np.float64) - y.astype(np.float64))
    if evaluation is not None and len(evaluation.y):
        on_set = np.asarray(estimator.predict(model_input(evaluation.x, names)), dtype=np.float64)
        own = np.abs(on_set - evaluation.y.astype(np.float64))
        p = float(stats.mannwhitneyu(errors, own, alternative="greater").pvalue)
        where = f"evaluation set v{evaluation.version} ({len(own)} rows)"
        return {"on": where, "test": "mann_whitney_u", "mae": float(own.mean()),
                "import_mae": float(errors.mean()), "p_value": p}  # fmt: skip
    claimed = (metrics or {}).get("rmse")
    if isinstance(claimed, int | float) and claimed > 0 and len(errors) > 1:
        p = float(stats.ttest_1samp(errors**2, float(claimed) ** 2, alternative="greater").pvalue)
        rmse = float(np.sqrt(np.mean(errors**2)))
        return {"on": "its registration metrics", "test": "t_squared_errors", "rmse": float(claimed),
                "import_rmse": rmse, "p_value": p}  # fmt: skip
    return None


def _chance_reason(figures: dict[str, Any], alpha: float, who: str) -> str:
    if figures["test"] == "binomial":
        seen = f"agrees with {figures['agreement']:.1%} of the labels, chance being {figures['chance']:.1%}"
    elif figures["correlation"] is None:
        seen = "has no correlation to show with these targets (constant predictions or targets)"
    else:
        seen = f"correlates with the targets at r={figures['correlation']:.3f}"
    return (
        f"no better than chance: {who} {seen} ({figures['test']} p={figures['p_value']:.3g}"
        f" ≥ IMPORT_LABEL_ALPHA {alpha:g}, {figures['rows']} rows)"
    )


def _worse_reason(own: dict[str, Any], alpha: float, who: str) -> str:
    if "accuracy" in own:
        figures = f"accuracy {own['import_accuracy']:.1%} here against {own['accuracy']:.1%} on {own['on']}"
    elif "mae" in own:
        figures = f"mean absolute error {own['import_mae']:.4g} here against {own['mae']:.4g} on {own['on']}"
    else:
        figures = f"RMSE {own['import_rmse']:.4g} here against {own['rmse']:.4g} in {own['on']}"
    test = f"{own['test']} p={own['p_value']:.3g} < IMPORT_LABEL_ALPHA {alpha:g}"
    return f"far worse than its own figure: {who} has {figures} ({test})"
