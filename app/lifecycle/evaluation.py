"""What a retrain is judged on: the model's fixed evaluation set, a paired test, and data checks.

A candidate and the champion are scored on the same evaluation rows, which are kept apart
from the training set and never trained on; they are registered with the model (``models
eval-set``) or carved once from its first import. A candidate is promoted only when it is
better by the margin *and* a paired test on those rows says the difference is not chance:
McNemar's exact test for classifiers (the rows one model gets right and the other wrong),
the Wilcoxon signed-rank test on per-row absolute errors for regressors. Before training,
the data is checked: labels the model does not know, mostly duplicate rows, or a label
distribution unlike the evaluation set's reject the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import Connection, func, insert, select

from app.db import EvaluationSet
from app.services import Services

#: A label distribution this unlike the evaluation set's (p below it) rejects the run's data.
LABEL_SHIFT_P = 0.001
#: A training window with more duplicate rows than this share is rejected.
MOST_DUPLICATES = 0.5


@dataclass(frozen=True)
class EvalRows:
    version: int
    x: np.ndarray
    y: np.ndarray


def model_input(x: np.ndarray, names: list[str] | None) -> Any:
    """Rows as the model was fitted on them: a DataFrame with its feature names when it had them."""
    if names is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=names)


def typed_like(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Stored labels compared with predictions: as the predictions' type (JSON may have made
    ints of a float target, strings stay strings)."""
    try:
        return labels.astype(predictions.dtype)
    except (TypeError, ValueError):
        return labels


def store_set(
    svc: Services, name: str, x: np.ndarray, y: list[Any], source: str, conn: Connection | None = None
) -> int:
    """A new version of the model's evaluation set (in ``conn``'s transaction when given);
    returns its version."""
    if conn is None:
        with svc.engine.begin() as own:
            return store_set(svc, name, x, y, source, own)
    newest = conn.execute(
        select(func.max(EvaluationSet.version)).where(EvaluationSet.model_name == name)
    ).scalar()
    version = (newest or 0) + 1
    conn.execute(
        insert(EvaluationSet),
        {"model_name": name, "version": version, "source": source[:1000], "rows": len(y),
         "features": x.tolist(), "labels": list(y)},
    )  # fmt: skip
    return version


def latest_set(svc: Services, name: str) -> EvalRows | None:
    """The newest version of the model's evaluation set, or None when it has none."""
    with svc.engine.connect() as conn:
        row = conn.execute(
            select(EvaluationSet.version, EvaluationSet.features, EvaluationSet.labels)
            .where(EvaluationSet.model_name == name)
            .order_by(EvaluationSet.version.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return EvalRows(row.version, np.asarray(row.features, dtype=np.float64), np.asarray(row.labels))


def paired_test(
    y: np.ndarray, champion: np.ndarray, candidate: np.ndarray, classifier: bool
) -> tuple[str, float]:
    """The test's name and its one-sided p-value that the candidate is better on these rows."""
    if classifier:
        champion_only = int(np.sum((champion == y) & (candidate != y)))
        candidate_only = int(np.sum((champion != y) & (candidate == y)))
        if champion_only + candidate_only == 0:
            return "mcnemar_exact", 1.0
        result = stats.binomtest(candidate_only, champion_only + candidate_only, 0.5, alternative="greater")
        return "mcnemar_exact", float(result.pvalue)
    improvement = np.abs(champion - y) - np.abs(candidate - y)
    if not np.any(improvement):
        return "wilcoxon", 1.0
    return "wilcoxon", float(stats.wilcoxon(improvement, alternative="greater").pvalue)


def data_problems(
    x: np.ndarray, y: np.ndarray, evaluation: EvalRows | None, signature: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with a training window (empty when nothing is), and every check's number."""
    problems: list[str] = []
    checks: dict[str, Any] = {}
    classifier = signature["task"] == "classification"
    if classifier and signature.get("classes"):
        known = {str(c) for c in signature["classes"]}
        unknown = sorted({str(label) for label in y} - known)
        checks["unknown_labels"] = unknown[:20]
        if unknown:
            problems.append(f"labels the model does not know: {', '.join(unknown[:5])}")
    rows = np.column_stack([x, y.astype(str)]) if len(x) else np.empty((0, 0))
    duplicates = 1 - len(np.unique(rows, axis=0)) / len(rows) if len(rows) else 0.0
    checks["duplicate_share"] = round(float(duplicates), 4)
    if duplicates > MOST_DUPLICATES:
        problems.append(f"{duplicates:.0%} of the rows are duplicates")
    if evaluation is not None and len(y):
        test, p = _label_shift(y, evaluation.y, classifier)
        checks["label_distribution"] = {"test": test, "p_value": p}
        if p < LABEL_SHIFT_P:
            problems.append(f"the labels are distributed unlike the evaluation set's ({test} p={p:.2g})")
    return problems, checks


def _label_shift(y: np.ndarray, reference: np.ndarray, classifier: bool) -> tuple[str, float]:
    if not classifier:
        return "ks", float(stats.ks_2samp(y.astype(float), reference.astype(float)).pvalue)
    labels = sorted({str(v) for v in y} | {str(v) for v in reference})
    table = np.array([[np.sum(y.astype(str) == label) for label in labels],
                      [np.sum(reference.astype(str) == label) for label in labels]])  # fmt: skip
    if len(labels) < 2:
        return "chi_square", 1.0
    return "chi_square", float(stats.chi2_contingency(table).pvalue)
