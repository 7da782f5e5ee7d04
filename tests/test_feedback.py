"""Feedback on served rows, live quality per version, and the A/B report's statistics."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_diabetes, load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import Ridge
from sqlalchemy import func, select

from app.db import TrainingExample


def served_job(client, name: str, version: int, rows: list) -> dict:
    job = client.post(
        f"/v1/models/{name}/predictions?wait=20", json={"inputs": rows, "version": version}
    ).json
    assert job["status"] == "succeeded", job
    return job


def test_feedback_is_recorded_once_checked_and_joins_the_training_set(client, svc, registered, worker):
    job = served_job(client, "iris", 1, [[5.1, 3.5, 1.4, 0.21], [6.7, 3.0, 5.2, 2.31], [5.9, 3.0, 4.2, 1.51]])
    examples_before = _examples(svc, "iris")

    recorded = client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [0, 2, None]})

    assert recorded.status_code == 201 and recorded.json["recorded_rows"] == 2
    assert _examples(svc, "iris") == examples_before + 2
    again = client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [0, 2, 1]})
    assert again.status_code == 409 and again.json["error"]["code"] == "feedback_conflict"
    assert client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [0]}).status_code == 422
    assert client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [7, 0, 0]}).status_code == 422
    missing = client.post(
        "/v1/predictions/00000000-0000-0000-0000-000000000000/feedback", json={"labels": [1]}
    )
    assert missing.status_code == 404
    quality = client.get("/v1/models/iris/quality").json
    (v1,) = [v for v in quality["versions"] if v["version"] == 1]
    assert v1["n"] >= 2 and 0 <= v1["accuracy"] <= 1 and "f1_macro" in v1


def test_the_accuracy_ab_report_matches_scipy(client, svc, worker, tmp_path):
    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(x), 90, replace=False)
    good, weak = tmp_path / "good.joblib", tmp_path / "weak.joblib"
    joblib.dump(svc.registry.load("iris", 1)[0], good)  # the forest from conftest
    joblib.dump(DummyClassifier(strategy="stratified", random_state=0).fit(x, y), weak)
    svc.registry.register("abtest", good)
    svc.registry.register("abtest", weak)
    hits = {}
    for version in (1, 2):
        job = served_job(client, "abtest", version, x[rows].round(2).tolist())
        truth = y[rows].tolist()
        assert client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": truth}).status_code == 201
        hits[version] = [o["prediction"] == t for o, t in zip(job["outputs"], truth, strict=True)]

    report = client.get("/v1/models/abtest/ab-report?a=1&b=2").json

    assert report["metric"] == "accuracy" and report["a"]["n"] == report["b"]["n"] == 90
    assert report["a"]["value"] == pytest.approx(np.mean(hits[1]))
    table = [[sum(hits[v]), 90 - sum(hits[v])] for v in (1, 2)]
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert report["test"]["name"] == "two-proportion z-test"
    assert report["test"]["statistic"] ** 2 == pytest.approx(chi2, rel=1e-9), (
        "z² is the uncorrected chi-square"
    )
    assert report["test"]["p_value"] == pytest.approx(p_value, rel=1e-9)
    wilson = stats.binomtest(sum(hits[2]), 90).proportion_ci(method="wilson")
    assert report["b"]["ci95"] == pytest.approx([wilson.low, wilson.high])
    assert report["verdict"].startswith("v1 is higher on accuracy; the difference is significant")


def test_the_error_ab_report_is_welchs_t_test_and_says_when_data_is_short(client, svc, worker, tmp_path):
    data = load_diabetes()
    for alpha in (0.1, 50.0):
        path = tmp_path / f"ridge-{alpha}.joblib"
        joblib.dump(Ridge(alpha=alpha).fit(data.data, data.target), path)
        svc.registry.register("abreg", path)
    rows = data.data[:60].round(5).tolist()
    errors = {}
    for version in (1, 2):
        job = served_job(client, "abreg", version, rows)
        truth = data.target[:60].tolist()
        client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": truth})
        errors[version] = [abs(o["prediction"] - t) for o, t in zip(job["outputs"], truth, strict=True)]

    report = client.get("/v1/models/abreg/ab-report?a=1&b=2").json

    expected = stats.ttest_ind(errors[1], errors[2], equal_var=False)
    assert report["metric"] == "mean_absolute_error" and report["test"]["name"] == "Welch's t-test"
    assert report["test"]["statistic"] == pytest.approx(expected.statistic, rel=1e-9)
    assert report["test"]["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert report["a"]["value"] == pytest.approx(np.mean(errors[1]))

    svc.registry.register("abreg", tmp_path / "ridge-0.1.joblib")  # v3: no feedback yet
    short = client.get("/v1/models/abreg/ab-report?a=1&b=3").json
    assert short["test"] is None
    assert short["verdict"] == "not enough data: v3 has 0 labeled rows; at least 30 per version are needed"
    assert client.get("/v1/models/abreg/ab-report?a=1&b=9").status_code == 404


def _examples(svc, name: str) -> int:
    with svc.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(TrainingExample).where(TrainingExample.model_name == name)
        ).scalar_one()
