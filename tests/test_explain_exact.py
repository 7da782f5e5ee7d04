"""Every model registration marks explainable is explained exactly: base value plus contributions
is the model's own output (the signature's explained_output) to 1e-6, for the predicted class
and for every class; every other model is refused at submit, never accepted and then failed.

In-process on small models (app/scoring/explain.py's functions, as the bulk worker calls them);
tests/test_explain.py goes through the API and the workers."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.decomposition import PCA
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
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier

from app.registry.explainability import refusal
from app.registry.signature import signature_of
from app.registry.versions import ServedVersion
from app.scoring.explain import explanations

TOLERANCE = 1e-6


@cache
def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"iris": load_iris, "wine": load_wine, "cancer": load_breast_cancer, "diabetes": load_diabetes}
    x, y = loader[name](return_X_y=True)
    return x, y


# (model, data set, the output its explanation must add up to)
EXPLAINED = [
    (DecisionTreeClassifier(max_depth=4, random_state=0), "iris", "predict_proba"),
    (ExtraTreeClassifier(random_state=0), "wine", "predict_proba"),
    (DecisionTreeRegressor(max_depth=5, random_state=0), "diabetes", "predict"),
    (RandomForestClassifier(n_estimators=10, random_state=0), "wine", "predict_proba"),
    (RandomForestRegressor(n_estimators=10, random_state=0), "diabetes", "predict"),
    (ExtraTreesClassifier(n_estimators=10, random_state=0), "cancer", "predict_proba"),
    (ExtraTreesRegressor(n_estimators=10, random_state=0), "diabetes", "predict"),
    (GradientBoostingClassifier(n_estimators=20, random_state=0), "cancer", "decision_function"),
    (GradientBoostingClassifier(n_estimators=20, loss="exponential", random_state=0), "cancer", "decision_function"),
    (GradientBoostingClassifier(n_estimators=20, random_state=0), "wine", "decision_function"),
    (GradientBoostingClassifier(n_estimators=20, init="zero", random_state=0), "iris", "decision_function"),
    (GradientBoostingRegressor(n_estimators=20, random_state=0), "diabetes", "predict"),
    (GradientBoostingRegressor(n_estimators=20, loss="huber", random_state=0), "diabetes", "predict"),
    (HistGradientBoostingClassifier(max_iter=20, random_state=0), "cancer", "decision_function"),
    (HistGradientBoostingClassifier(max_iter=20, random_state=0), "wine", "decision_function"),
    (HistGradientBoostingRegressor(max_iter=20, random_state=0), "diabetes", "predict"),
    (HistGradientBoostingRegressor(max_iter=20, loss="absolute_error", random_state=0), "diabetes", "predict"),
    (LogisticRegression(max_iter=5000), "cancer", "decision_function"),
    (LogisticRegression(max_iter=5000), "wine", "decision_function"),
    (RidgeClassifier(), "iris", "decision_function"),
    (LinearRegression(), "diabetes", "predict"),
    (Ridge(alpha=0.5), "diabetes", "predict"),
    (make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), "wine", "decision_function"),
    (make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)), "iris", "predict_proba"),
    (make_pipeline(MinMaxScaler(), GradientBoostingClassifier(n_estimators=10, random_state=0)), "wine", "decision_function"),
    (make_pipeline(RobustScaler(), HistGradientBoostingRegressor(max_iter=10)), "diabetes", "predict"),
]  # fmt: skip


def _served(model: Any) -> ServedVersion:
    signature = signature_of(model)
    return ServedVersion(f"exact-{uuid.uuid4().hex[:8]}", 1, uuid.uuid4().hex, "", signature, None)


def _label(model: Any) -> str:
    steps = getattr(model, "steps", None)
    name = "+".join(type(s).__name__ for _, s in steps) if steps else type(model).__name__
    extra = {k: v for k, v in model.get_params(deep=False).items() if k in ("loss", "init") and v not in (None, "log_loss", "squared_error")}  # fmt: skip
    return name + (f"{extra}" if extra else "")


@pytest.mark.parametrize(
    ("model", "data", "output"), EXPLAINED, ids=[f"{_label(m)}-{d}" for m, d, _ in EXPLAINED]
)
def test_each_explainable_model_adds_up_to_its_own_output_for_every_class(model, data, output):
    x, y = _data(data)
    model.fit(x, y)
    rows = x[:: max(1, len(x) // 40)]  # about 40 rows across the data set
    served = _served(model)
    predictions = model.predict(rows).tolist()
    reference = x[:100]

    found = explanations(model, served, rows, predictions, lambda: reference, [True] * len(rows))

    assert served.signature["explained_output"] == output and served.signature["explainer"]
    own = np.asarray(getattr(model, output)(rows), dtype=np.float64)
    classes = served.signature["classes"]
    for i, explanation in enumerate(found):
        if classes is None:  # a regressor: its prediction
            assert _total(explanation) == pytest.approx(own[i], abs=TOLERANCE, rel=0)
            continue
        by_class = explanation["by_class"]
        if own.ndim == 1:  # one output: the second class's
            assert list(by_class) == [str(classes[-1])] and explanation["class"] == classes[-1]
            assert _total(explanation) == pytest.approx(own[i], abs=TOLERANCE, rel=0)
            continue
        assert list(by_class) == [str(c) for c in classes], "every class is explained"
        for k, label in enumerate(classes):
            assert _total(by_class[str(label)]) == pytest.approx(own[i, k], abs=TOLERANCE, rel=0), label
        assert explanation["class"] == predictions[i], "the row's own explanation is its predicted class's"
        assert _total(explanation) == pytest.approx(
            own[i, classes.index(predictions[i])], abs=TOLERANCE, rel=0
        )


def _total(explanation: dict[str, Any]) -> float:
    return explanation["base_value"] + sum(explanation["contributions"].values())


def _categorical_hgb() -> Any:
    x, y = _data("wine")
    frame = pd.DataFrame(x[:, :3], columns=["a", "b", "c"]).assign(kind=pd.Categorical(y % 2))
    return HistGradientBoostingClassifier(max_iter=5).fit(frame, y)


# Models with no exact explanation: refused at submit by their stored signature.
REFUSED = [
    lambda: GradientBoostingClassifier(n_estimators=5, init=LogisticRegression(max_iter=1000)).fit(
        *_data("wine")
    ),
    lambda: HistGradientBoostingRegressor(max_iter=5, loss="poisson").fit(*_data("diabetes")),
    _categorical_hgb,
    lambda: make_pipeline(PCA(2), LogisticRegression()).fit(*_data("iris")),
    lambda: KNeighborsClassifier().fit(*_data("iris")),
]


@pytest.mark.parametrize(
    "make", REFUSED, ids=["gbm-init-estimator", "hgb-poisson", "hgb-categorical", "pca-pipeline", "knn"]
)
def test_a_model_without_an_exact_explanation_is_recorded_so_and_refused(make):
    signature = signature_of(make())

    assert signature["explainer"] is None and signature["explained_output"] is None
    assert signature["estimator"] in refusal(signature)


@pytest.mark.parametrize(
    ("stored", "accepted"),
    [
        ({"estimator": "RandomForestClassifier", "explainer": "tree"}, True),
        ({"estimator": "ExtraTreeRegressor", "explainer": "tree"}, True),
        ({"estimator": "Pipeline", "explainer": "linear"}, True),
        ({"estimator": "GradientBoostingClassifier", "explainer": "tree"}, False),
        ({"estimator": "Pipeline", "explainer": "tree"}, False),
        ({"estimator": "HistGradientBoostingClassifier", "explainer": None}, False),
        ({"estimator": "RandomForestClassifier"}, False),
    ],
)
def test_a_version_registered_under_the_first_rule_is_accepted_only_where_that_rule_was_exact(
    stored, accepted
):
    # No explained_output: registered before the rule above. A gradient-boosted model (or a
    # pipeline ending in trees) may have had an init estimator; the signature cannot tell.
    found = refusal({"n_features": 4, "task": "classification", **stored})

    assert (found is None) == accepted, found
    if not accepted:
        assert "register it again" in found


@pytest.fixture
def workers(worker, bulk_worker):
    """Explained rows are taken by the bulk worker (app/celery_app.py), plain ones by the online one."""


def _register(svc, tmp_path, model: Any) -> str:
    import joblib

    name = f"exact-{uuid.uuid4().hex[:8]}"
    joblib.dump(model, tmp_path / f"{name}.joblib")
    svc.registry.register(name, tmp_path / f"{name}.joblib")
    return name


def test_a_multiclass_gradient_boosted_model_is_explained_end_to_end_for_every_class(
    client, svc, workers, tmp_path
):
    # The case an outside check found: three classes of wine, accepted and then failed every job.
    x, y = _data("wine")
    model = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x, y)
    name = _register(svc, tmp_path, model)
    rows = x[np.random.default_rng().choice(len(x), 6, replace=False)]

    job = client.post(
        f"/v1/models/{name}/predictions?wait=30",
        json={"inputs": rows.tolist(), "explain": True, "explain_classes": "all"},
    ).json

    assert job["status"] == "succeeded", job
    raw = model.decision_function(rows)
    for i, output in enumerate(job["outputs"]):
        explanation = output["explanation"]
        assert explanation["class"] == output["prediction"]
        for k, label in enumerate(model.classes_):
            assert _total(explanation["by_class"][str(label)]) == pytest.approx(
                raw[i, k], abs=TOLERANCE, rel=0
            )


def test_a_version_registered_under_the_first_rule_is_refused_at_submit_not_failed(client, svc, tmp_path):
    from sqlalchemy import update

    from app.db import Model, ModelVersion
    from tests.helpers import count_jobs

    x, y = _data("wine")
    model = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(x, y)
    name = _register(svc, tmp_path, model)
    # As the first rule stored it: every gradient-boosted model "tree", no explained_output.
    first_rule = {k: v for k, v in signature_of(model).items() if k != "explained_output"}
    with svc.engine.begin() as conn:
        model_id = conn.execute(Model.__table__.select().where(Model.name == name)).one().id
        conn.execute(
            update(ModelVersion).where(ModelVersion.model_id == model_id).values(signature=first_rule)
        )
    before = count_jobs(svc)

    response = client.post(f"/v1/models/{name}/predictions", json={"inputs": x[:1].tolist(), "explain": True})

    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "explanation_unsupported"
    assert "register it again" in response.json["error"]["message"]
    assert count_jobs(svc) == before, "nothing was accepted"
