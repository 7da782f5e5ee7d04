"""Run a model on a matrix and shape its answers as the public contract's outputs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.ensemble._forest import ForestClassifier, ForestRegressor
from sklearn.tree import DecisionTreeClassifier

# Estimators whose predict() is, in scikit-learn's own code, classes_.take(argmax(proba)):
# for them one predict_proba call gives both outputs, exactly.
_PREDICT_IS_ARGMAX_PROBA = (ForestClassifier, DecisionTreeClassifier)


def predict_by_job(
    estimator: Any, signature: dict[str, Any], matrix: np.ndarray, sizes: list[int], compiled: Any = None
) -> list[list[dict[str, Any]] | Exception]:
    """Each job's outputs, or the error the model raised on its rows; ``sizes`` are the jobs'
    row counts, in the matrix's order.

    A batch holds the rows of callers who do not know each other, so one caller's row that
    the model refuses must not fail the others: a call that raises is split in two halves
    of jobs and each half tried again, until every failing job stands alone (about
    2·log2(jobs) more calls per bad job; a batch that succeeds costs one call, as before).
    ``compiled``: the version's compiled backend, if it serves one (see predict_arrays).
    """
    try:
        outputs = predict_outputs(estimator, signature, matrix, compiled)
    except Exception as exc:  # a model may raise anything
        if len(sizes) == 1:
            return [exc]
        half = len(sizes) // 2
        cut = sum(sizes[:half])
        return predict_by_job(estimator, signature, matrix[:cut], sizes[:half], compiled) + predict_by_job(
            estimator, signature, matrix[cut:], sizes[half:], compiled
        )
    per_job: list[list[dict[str, Any]] | Exception] = []
    offset = 0
    for size in sizes:
        per_job.append(outputs[offset : offset + size])
        offset += size
    return per_job


def predict_outputs(
    estimator: Any, signature: dict[str, Any], matrix: np.ndarray, compiled: Any = None
) -> list[dict[str, Any]]:
    """One output per row: prediction, plus class probabilities for a probabilistic classifier."""
    predictions, proba = predict_arrays(estimator, signature, matrix, compiled)
    if proba is None:
        return [{"prediction": p} for p in predictions.tolist()]
    classes = [str(c) for c in signature["classes"]]
    return [
        {"prediction": p, "probabilities": dict(zip(classes, probs, strict=True))}
        for p, probs in zip(predictions.tolist(), proba.tolist(), strict=True)
    ]


def predict_arrays(
    estimator: Any, signature: dict[str, Any], matrix: np.ndarray, compiled: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows' predictions, and their class probabilities (rows × classes, in the
    signature's class order) for a probabilistic classifier, else None.

    Online batches shape these as JSON outputs (:func:`predict_outputs`), bulk chunks
    write them as Parquet columns (workers/bulk.py). ``prediction`` equals
    ``estimator.predict`` exactly: it is computed by ``predict`` unless the estimator's own
    predict is the argmax of its probabilities (forests, trees), where computing it from
    the one predict_proba call saves running the model twice.

    ``compiled`` (app/scoring/compiled.py's CompiledModel, for a version an admin compiled and
    whose parity gate passed) answers batches up to its crossover instead: equal predictions,
    probabilities and values within the tolerance its gate recorded.
    """
    if compiled is not None and compiled.serves(len(matrix)):
        return compiled.predict_arrays(estimator, signature, matrix)
    with warnings.catch_warnings():
        # Models fitted on a DataFrame warn when given a bare array; columns are already in
        # the fitted order (the signature's feature_names), so the warning says nothing new.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if not signature.get("has_proba"):
            return np.asarray(_predict(estimator, matrix)), None
        proba = np.asarray(_predict_proba(estimator, matrix))
        if _argmax_is_prediction(estimator):
            predictions = estimator.classes_.take(np.argmax(proba, axis=1))
        else:
            predictions = np.asarray(estimator.predict(matrix.copy()))
    return predictions, proba


# Any other estimator gets its own copy of the rows: one may transform its input in place
# (StandardScaler(copy=False) in a pipeline does), and the rows are read again after it
# (predict after predict_proba; the caller's cache keys). A forest reads a float32 copy.


def _predict(estimator: Any, matrix: np.ndarray) -> np.ndarray:
    if isinstance(estimator, ForestRegressor) and _forest_runs_in_this_thread(estimator):
        return _forest_mean(estimator, matrix, "predict")
    return estimator.predict(matrix.copy())


def _predict_proba(estimator: Any, matrix: np.ndarray) -> np.ndarray:
    if isinstance(estimator, ForestClassifier) and _forest_runs_in_this_thread(estimator):
        return _forest_mean(estimator, matrix, "predict_proba")
    return estimator.predict_proba(matrix.copy())


def _forest_runs_in_this_thread(forest: Any) -> bool:
    """A single-output forest that scikit-learn would run tree after tree in the caller's thread."""
    return forest.n_outputs_ == 1 and forest.n_jobs in (None, 1)


def _forest_mean(forest: Any, matrix: np.ndarray, tree_method: str) -> np.ndarray:
    """What ``forest.predict_proba`` (or a regressor's ``predict``) returns, bit for bit, without joblib.

    scikit-learn runs every tree of a forest as a joblib task, and since 1.7 each task also
    resets and re-adds every warning filter of the process (to carry them into joblib's
    workers): ~75 µs per tree, 8 ms for a 100-tree forest on a batch of one row, more than ten
    times what the trees themselves cost. Each tree's answer is what its own
    ``predict_proba`` / ``predict`` returns with ``check_input=False``: ``tree_.predict`` on
    the float32 rows, cut to the tree's classes (a regressor's single column). Called
    directly, because the estimator's wrapper checks again that it is fitted (~25 µs a
    tree: 2.5 ms a batch). The answers are added to a float64 sum in estimator order and
    divided by their number, as scikit-learn's sequential path does, so the result is
    identical (tests/test_inference.py compares them).
    """
    with np.errstate(over="ignore"):  # a value beyond float32 becomes infinity, refused below
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
    # What the forest's own checks would say; the API's validation normally catches both first.
    if rows.shape[1] != forest.n_features_in_:
        raise ValueError(f"X has {rows.shape[1]} features, but the forest expects {forest.n_features_in_}")
    if not np.isfinite(rows).all():
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
    classifier = tree_method == "predict_proba"
    total = np.zeros((rows.shape[0], forest.n_classes_) if classifier else (rows.shape[0],))
    for tree in forest.estimators_:
        answer = tree.tree_.predict(rows)
        total += answer[:, : tree.n_classes_] if classifier else answer[:, 0]
    total /= len(forest.estimators_)
    return total


def _argmax_is_prediction(estimator: Any) -> bool:
    return isinstance(estimator, _PREDICT_IS_ARGMAX_PROBA) and getattr(estimator, "n_outputs_", 1) == 1
