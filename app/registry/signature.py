"""What a model accepts, and turning request rows into the matrix it is fed.

A signature is plain JSON stored with each model version::

    {"n_features": 4, "feature_names": ["a", ...] or null, "dtypes": ["float64", ...],
     "task": "classification" | "regression", "classes": [...] or null,
     "has_proba": true, "estimator": "RandomForestClassifier",
     "explainer": "tree" | "boosted_trees" | "linear" | null,
     "explained_output": "predict_proba" | "decision_function" | "predict" | null}

(app/registry/explainability.py: which models are explained, and to which output.)
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.ensemble._forest import BaseForest
from sklearn.ensemble._gb import BaseGradientBoosting
from sklearn.tree import BaseDecisionTree

from app.errors import InvalidInput, PayloadTooLarge
from app.registry.explainability import explained_output, explainer_kind


def in_feature_order(table: Any, signature: dict[str, Any], what: str) -> Any:
    """``table``'s columns named like the model's features, in the fitted order.

    A table without column names, or a model fitted without them, is returned as it is.
    Raises InvalidInput naming the features ``what`` (say, "the training data") lacks.
    """
    names = signature["feature_names"]
    if names is None or not hasattr(table, "columns"):
        return table
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InvalidInput(
            f"{what} lacks the model's features: {', '.join(missing[:5])}", missing=missing[:20]
        )
    return table[names]


# scikit-learn's trees, forests and gradient boosting read their input as float32: a value
# beyond float32's range becomes infinity there, and they refuse the whole call.
_FLOAT32_MODELS = (BaseDecisionTree, BaseForest, BaseGradientBoosting)
_FLOAT32_LARGEST = float(np.finfo(np.float32).max)


def signature_of(estimator: Any) -> dict[str, Any]:
    """Describe a fitted estimator's inputs and outputs (raises ValueError if unfitted)."""
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise ValueError("the estimator is not fitted (it has no n_features_in_)")
    names = getattr(estimator, "feature_names_in_", None)
    classifier = is_classifier(estimator)
    classes = getattr(estimator, "classes_", None) if classifier else None
    return {
        "n_features": int(n_features),
        "feature_names": [str(n) for n in names] if names is not None else None,
        "dtypes": [_input_dtype(estimator)] * int(n_features),
        "task": "classification" if classifier else "regression",
        "classes": np.asarray(classes).tolist() if classes is not None else None,
        "has_proba": classifier and hasattr(estimator, "predict_proba"),
        "estimator": type(estimator).__name__,
        "explainer": explainer_kind(estimator),
        "explained_output": explained_output(estimator),
    }


def _input_dtype(estimator: Any) -> str:
    return "float32" if isinstance(estimator, _FLOAT32_MODELS) else "float64"


def largest_value(signature: dict[str, Any]) -> float | None:
    """The largest magnitude the model's features can hold, when it is less than float64's."""
    return _FLOAT32_LARGEST if "float32" in signature["dtypes"] else None


def feature_index(signature: dict[str, Any]) -> dict[str, int] | None:
    """Feature name -> column, or None when the model was fitted without names."""
    names = signature["feature_names"]
    return {name: j for j, name in enumerate(names)} if names is not None else None


def rows_to_matrix(
    rows: list[Any],
    n_features: int,
    names: dict[str, int] | None,
    max_rows: int,
    largest: float | None = None,
) -> np.ndarray:
    """Validate request rows and stack them as float64, in the model's feature order.

    A row is a list of numbers in feature order or an object keyed by feature name
    (``names`` maps each name to its column). Raises 413 for too many rows and 422
    naming the first bad row and field: a value that is not a finite number, or whose
    magnitude passes ``largest`` (what the model's dtype holds, see largest_value).
    """
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f"{len(rows)} rows sent; at most {max_rows} per request",
            rows=len(rows),
            limit=max_rows,
        )
    fast = _plain_number_rows(rows, n_features, largest)
    return fast if fast is not None else _checked_rows(rows, n_features, names, largest)


def checked_matrix(
    matrix: np.ndarray, names: list[str] | None, max_rows: int, largest: float | None = None
) -> np.ndarray:
    """A float64 matrix already in the model's feature order (the Open Inference Protocol's
    tensors), checked as rows_to_matrix checks rows: 413 past ``max_rows``, 422 naming the
    first row and field whose value is not finite or passes ``largest``."""
    if len(matrix) > max_rows:
        raise PayloadTooLarge(
            f"{len(matrix)} rows sent; at most {max_rows} per request", rows=len(matrix), limit=max_rows
        )
    bad = ~np.isfinite(matrix)
    if largest is not None:
        bad |= np.abs(matrix) > largest
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        _number(float(matrix[i, j]), i, names[j] if names else j, largest)  # raises, as for a JSON row
    return matrix


def _checked_rows(
    rows: list[Any], n_features: int, names: dict[str, int] | None, largest: float | None
) -> np.ndarray:
    """Value by value: the matrix, or 422 naming the first bad row and field (rows_to_matrix)."""
    n = n_features
    ordered = list(names) if names is not None else None
    matrix = np.empty((len(rows), n), dtype=np.float64)
    for i, row in enumerate(rows):
        if isinstance(row, list):
            if len(row) != n:
                raise InvalidInput(
                    f"row {i} has {len(row)} values; the model takes {n} features",
                    row=i,
                    expected=n,
                    got=len(row),
                )
            for j, value in enumerate(row):
                matrix[i, j] = _number(value, i, ordered[j] if ordered else j, largest)
        elif isinstance(row, dict):
            if names is None:
                raise InvalidInput(
                    f"row {i} is an object, but the model has no feature names; send a list",
                    row=i,
                )
            missing = [name for name in names if name not in row]
            unknown = [key for key in row if key not in names]
            if missing or unknown:
                parts = []
                if missing:
                    parts.append(f"missing {', '.join(missing[:5])}")
                if unknown:
                    parts.append(f"unknown {', '.join(map(str, unknown[:5]))}")
                raise InvalidInput(
                    f"row {i} does not match the feature names: {'; '.join(parts)}",
                    row=i,
                    missing=missing,
                    unknown=unknown,
                )
            for name, j in names.items():
                matrix[i, j] = _number(row[name], i, name, largest)
        else:
            raise InvalidInput(
                f"row {i} must be a list of numbers or an object keyed by feature name",
                row=i,
            )
    return matrix


_PLAIN_NUMBERS = {int, float}


def _plain_number_rows(rows: list[Any], n: int, largest: float | None) -> np.ndarray | None:
    """The matrix, when every row is a list of ``n`` finite JSON numbers within ``largest``; else None.

    The common case, checked with C-level loops (numpy, ``map``) rather than a Python
    call per value. Anything else returns None and takes the value-by-value path, which
    names the row and field at fault; both accept exactly the same inputs.
    """
    if not all(type(row) is list and len(row) == n for row in rows):
        return None
    # Exact types: bool (an int subclass) and strings must not slip through as numbers.
    if not set(map(type, itertools.chain.from_iterable(rows))) <= _PLAIN_NUMBERS:
        return None
    try:
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), n)  # (0, n) when empty
    except OverflowError:  # an integer beyond float64
        return None
    if not np.isfinite(matrix).all():
        return None
    if largest is not None and matrix.size and np.abs(matrix).max() > largest:
        return None
    return matrix


def _number(value: Any, row: int, field: int | str, largest: float | None) -> float:
    # bool is an int subclass in Python; a JSON true is not a feature value.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(
            f"row {row}, field {field!r}: expected a number, got {type(value).__name__}",
            row=row,
            field=field,
        )
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise InvalidInput(
            f"row {row}, field {field!r}: number out of range for a float64",
            row=row,
            field=field,
        ) from None
    if not math.isfinite(number):
        raise InvalidInput(
            f"row {row}, field {field!r}: NaN and infinity are not accepted",
            row=row,
            field=field,
        )
    if largest is not None and abs(number) > largest:
        raise InvalidInput(
            f"row {row}, field {field!r}: {number:g} is beyond what this model's float32 features hold"
            f" (±{largest:.4g})",
            row=row,
            field=field,
        )
    return number
