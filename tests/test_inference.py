"""predq's own paths through forests must give exactly what scikit-learn gives in-process."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from app.registry.signature import signature_of
from app.scoring.inference import predict_outputs

BATCH_SIZES = (1, 7, 300)


def labelled_data(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=900, n_features=8, n_classes=n_classes, n_informative=5, random_state=3
    )
    return X, np.array(["ant", "bee", "cat"])[y]


@pytest.mark.parametrize("forest_class", [RandomForestClassifier, ExtraTreesClassifier])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_forest_classifier_answers_exactly_as_predict_and_predict_proba(forest_class, n_classes):
    X, labels = labelled_data(n_classes)
    model = forest_class(n_estimators=30, random_state=0).fit(X[:600], labels[:600])

    for size in BATCH_SIZES:
        rows = X[600 : 600 + size]
        outputs = predict_outputs(model, signature_of(model), rows)

        assert [o["prediction"] for o in outputs] == model.predict(rows).tolist()
        # Compared as floats with ==: bit for bit, not approximately.
        expected = model.predict_proba(rows).tolist()
        assert [list(o["probabilities"].values()) for o in outputs] == expected
        assert list(outputs[0]["probabilities"]) == [str(c) for c in model.classes_]


@pytest.mark.parametrize("forest_class", [RandomForestRegressor, ExtraTreesRegressor])
def test_a_forest_regressor_answers_exactly_as_predict(forest_class):
    X, y = make_regression(n_samples=900, n_features=8, noise=5.0, random_state=3)
    model = forest_class(n_estimators=30, random_state=0).fit(X[:600], y[:600])

    for size in BATCH_SIZES:
        rows = X[600 : 600 + size]
        outputs = predict_outputs(model, signature_of(model), rows)

        assert [o["prediction"] for o in outputs] == model.predict(rows).tolist()


def test_a_forest_fitted_on_a_frame_answers_as_scikit_learn_does_given_the_frame():
    """predq gives it bare arrays, in the fitted column order."""
    import pandas as pd

    X, labels = labelled_data(3)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame[:600], labels[:600])

    outputs = predict_outputs(model, signature_of(model), X[600:650])

    expected = model.predict_proba(frame[600:650]).tolist()
    assert [list(o["probabilities"].values()) for o in outputs] == expected


def test_a_forest_refuses_rows_of_the_wrong_width_before_asking_its_trees():
    """The trees are asked without scikit-learn's checks, so predq checks the width itself."""
    X, labels = labelled_data(2)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X[:600], labels[:600])

    with pytest.raises(ValueError, match="features"):
        predict_outputs(model, signature_of(model), X[600:603, :5])


def test_a_model_that_scales_its_input_in_place_is_answered_as_on_fresh_rows():
    """StandardScaler(copy=False) rewrites the rows it is given; predict_outputs reads them
    twice (predict_proba, then predict) and the worker hashes them for the cache."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, labels = labelled_data(3)
    X = X * 10 + 5  # far from scaled already, so scaling twice changes the answers
    model = make_pipeline(StandardScaler(copy=False), LogisticRegression(max_iter=500))
    model.fit(X[:600].copy(), labels[:600])
    rows = np.ascontiguousarray(X[600:700])
    before = rows.copy()

    outputs = predict_outputs(model, signature_of(model), rows)

    assert np.array_equal(rows, before), "the caller's rows are left as they were"
    assert [o["prediction"] for o in outputs] == model.predict(before.copy()).tolist()
    expected = model.predict_proba(before.copy()).tolist()
    assert [list(o["probabilities"].values()) for o in outputs] == expected


def test_a_rows_cache_key_is_the_same_alone_or_among_others_and_names_the_version():
    # The API hashes a request's rows and the worker a batch's: the same row must get the
    # same key wherever it sits, or a cached output would never be found.
    from app.predictions.queue import cache_keys

    matrix = np.random.default_rng(3).normal(size=(50, 6))
    together = cache_keys("m", 1, matrix)

    assert together == [cache_keys("m", 1, matrix[i : i + 1])[0] for i in range(len(matrix))]
    assert len(set(together)) == len(matrix)
    assert cache_keys("m", 2, matrix[:1]) != together[:1]
    assert cache_keys("m", 1, matrix[:0]) == []
