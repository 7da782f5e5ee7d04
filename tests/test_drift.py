"""Data drift: KS and PSI against the reference sample; reports stored, served and exported."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import ks_2samp
from sklearn.ensemble import RandomForestClassifier
from sqlalchemy import update

from app.celery_app import CHECK_DRIFT
from app.db import Job, utcnow
from app.lifecycle.drift import check_model, compare, latest_reports, psi
from tests.helpers import insert_queued_job

NAMES = ["a", "b", "c", "d"]


def sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Four features with different shapes; ``shift`` moves the first three by that many sds."""
    return np.column_stack(
        [
            rng.normal(0 + shift, 1, n),
            rng.exponential(2, n) + 2 * shift,
            rng.uniform(0, 10, n) + 2.9 * shift,
            rng.normal(5, 3, n),
        ]
    )


def test_a_shifted_window_drifts_and_a_same_distribution_one_does_not():
    rng = np.random.default_rng(0)
    reference, moved = sample(rng, 2000), sample(rng, 1000, shift=0.5)

    shifted = compare(reference, moved, NAMES)
    same = compare(reference, sample(rng, 1000), NAMES)

    assert shifted["drifted"] and shifted["drifted_share"] == 0.75
    assert [f["drifted"] for f in shifted["features"]] == [True, True, True, False]
    assert not same["drifted"]
    expected = ks_2samp(reference[:, 0], moved[:, 0])
    assert shifted["features"][0]["ks_pvalue"] == expected.pvalue
    assert shifted["features"][0]["ks_statistic"] == expected.statistic


def test_twenty_same_distribution_windows_raise_at_most_one_false_alarm():
    reference = sample(np.random.default_rng(1), 2000)
    alarms = [compare(reference, sample(np.random.default_rng(100 + seed), 500), NAMES)["drifted"]
              for seed in range(20)]  # fmt: skip
    assert sum(alarms) <= 1, alarms


def test_psi_is_zero_for_the_same_data_and_large_for_a_moved_one():
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, rng.normal(0, 1, 5000)) < 0.05
    assert psi(reference, rng.normal(1, 1, 5000)) > 0.2
    assert np.isfinite(psi(np.zeros(100), np.ones(100))), "a constant feature still gives a number"


@pytest.fixture(scope="module")
def drift_model(svc, tmp_path_factory):
    """A classifier on the four features, registered with a reference sample of its training data."""
    import joblib

    rng = np.random.default_rng(3)
    train = pd.DataFrame(sample(rng, 3000), columns=NAMES)
    labels = (train["a"] + train["d"] > 5).astype(int)
    path = tmp_path_factory.mktemp("drift") / "model.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(train, labels), path)
    csv = path.with_suffix(".csv")
    train.to_csv(csv, index=False)
    return path, csv


def test_drift_check_stores_serves_and_exports_reports(app, svc, client, drift_model):
    path, csv = drift_model
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["models", "register", "--name", "drifty", "--file", str(path), "--reference", str(csv)]
    )
    assert result.exit_code == 0, result.output
    assert len(svc.registry.reference("drifty", 1)) == 2000, "sampled down to DRIFT_REFERENCE_ROWS"

    few = check_model(svc, "drifty")
    assert few["status"] == "insufficient_data" and few["window_rows"] == 0

    # Production inputs as the API stores them (job rows), shifted on three features.
    rows = sample(np.random.default_rng(4), 400, shift=0.5).tolist()
    for start in range(0, 400, 50):
        insert_queued_job(svc, "drifty", rows[start : start + 50])
    report = check_model(
        dataclasses.replace(svc, settings=svc.settings.replace(drift_min_rows=100)), "drifty"
    )

    assert report["status"] == "drift" and report["window_rows"] == 400 and report["reference_rows"] == 2000
    served = client.get("/v1/models/drifty/drift?limit=5").json
    assert [r["status"] for r in served["reports"]] == ["drift", "insufficient_data"]
    assert served["reports"][0]["features"][0]["feature"] == "a"
    assert client.get("/v1/models/nope/drift").status_code == 404

    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
               for s in family.samples}  # fmt: skip
    assert metrics[("predq_drift_detected", (("model", "drifty"), ("version", "1")))] == 1.0
    assert metrics[("predq_drift_share", (("model", "drifty"), ("version", "1")))] == 0.75
    assert metrics[("predq_drift_psi", (("feature", "a"), ("model", "drifty"), ("version", "1")))] > 0.2
    with svc.engine.begin() as conn:  # not for the sweeper tests to re-queue
        conn.execute(
            update(Job).where(Job.model_name == "drifty").values(status="failed", completed_at=utcnow())
        )


def test_beat_schedules_the_check_and_a_real_worker_runs_it(svc, registered, worker):
    assert svc.celery.conf.beat_schedule["check-drift"]["task"] == CHECK_DRIFT
    before = {r["id"] for r in latest_reports(svc, "plain")}

    svc.celery.send_task(CHECK_DRIFT)

    deadline = time.monotonic() + 30
    while not (new := [r for r in latest_reports(svc, "plain") if r["id"] not in before]):
        assert time.monotonic() < deadline, "the worker stored no drift report"
        time.sleep(0.2)
    assert new[0]["status"] == "no_reference", "registered without a reference sample"
