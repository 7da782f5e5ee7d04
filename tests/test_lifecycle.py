"""Model lifecycle: the alias audit trail, rollback, and retraining that promotes only a better model."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from app.celery_app import RETRAIN, SCHEDULE_RETRAINS
from app.lifecycle import training, training_data, training_runs
from app.lifecycle.drift import check_model
from tests.helpers import client_for

FEATURES = ["x0", "x1"]


def ring(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Two features; the label says whether the point lies inside a ring-shaped boundary."""
    frame = pd.DataFrame(rng.normal(0, 1, (n, 2)), columns=FEATURES)
    frame["y"] = ((frame.x0**2 + frame.x1**2) < 1.4).astype(int)
    return frame


def register(svc, tmp_path: Path, name: str, estimator, data: pd.DataFrame) -> None:
    path = tmp_path / f"{name}.joblib"
    joblib.dump(estimator.fit(data[FEATURES], data["y"]), path)
    svc.registry.register(name, path)


def import_examples(svc, name: str, data: pd.DataFrame, accept: bool = False) -> dict:
    done = training_data.import_examples(svc, name, data, label="y")
    assert done["rows"] + done["evaluation_rows"] == len(data)
    if accept and done["status"] == "quarantined":
        # A linear model has no skill on a ring, so it cannot vouch for the labels: an admin does.
        done = training_data.accept_import(svc, name, done["id"], "test")
    return done


def test_promote_and_rollback_are_audited_and_serving_follows_without_restart(app, svc, tokens, artifacts):
    admin = client_for(app, tokens["admin"])
    svc.registry.register("life", artifacts["iris"])
    svc.registry.register("life", artifacts["iris"])
    cli = app.test_cli_runner().invoke(
        args=["models", "promote", "life", "2", "--reason", "better on Q3 data"]
    )
    assert cli.exit_code == 0, cli.output
    assert (
        admin.post("/v1/models/life/predictions", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).json["model"][
            "version"
        ]
        == 2
    )

    rolled = admin.post("/v1/models/life/aliases/champion/rollback", json={"reason": "v2 misbehaves"})

    assert rolled.status_code == 200, rolled.json
    assert rolled.json["aliases"]["champion"] == 1
    served = admin.post("/v1/models/life/predictions", json={"inputs": [[5.1, 3.5, 1.4, 0.3]]}).json
    assert served["model"]["version"] == 1, "the API process serves the rolled-back version at once"
    events = admin.get("/v1/models/life/alias-events").json["events"]
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in events] == [
        ("champion", 2, 1), ("champion", 1, 2), ("champion", None, 1),
    ]  # fmt: skip
    assert events[0]["actor"] == "key:test-admin" and events[0]["reason"] == "v2 misbehaves"
    assert events[1]["actor"].startswith("cli:") and events[1]["reason"] == "better on Q3 data"
    assert events[2]["actor"] == "register"
    never_moved = admin.post("/v1/models/life/aliases/challenger/rollback", json={})
    assert never_moved.status_code == 409 and never_moved.json["error"]["code"] == "nothing_to_roll_back"
    assert (
        client_for(app, tokens["predict"])
        .post("/v1/models/life/aliases/champion/rollback", json={})
        .status_code
        == 403
    )


def test_a_retrain_on_data_where_a_fresh_fit_is_better_promotes_it(app, svc, client, tmp_path):
    rng = np.random.default_rng(0)
    # The champion learned a boundary a linear model cannot draw, from little data ...
    register(svc, tmp_path, "ringy", RandomForestClassifier(n_estimators=30, random_state=0), ring(rng, 60))
    # ... and the training set has since grown (a fifth of the first import becomes the
    # evaluation set, never trained on).
    imported = import_examples(svc, "ringy", ring(rng, 3000))
    assert imported["evaluation_rows"] == 600

    run = training.retrain(svc, "ringy")

    assert run["status"] == "promoted", run["reason"]
    assert run["candidate_version"] == 2 and run["parent_version"] == 1 and run["rows"] == 2400
    assert run["imports"] == [imported["id"]]
    assert (
        run["metrics"]["judged_on"]["what"] == "evaluation set v1"
        and run["metrics"]["judged_on"]["rows"] == 600
    )
    assert run["metrics"]["judged_on"]["p_value"] < 0.05 and "mcnemar_exact p=" in run["reason"]
    assert run["metrics"]["candidate"]["accuracy"] > run["metrics"]["champion"]["accuracy"] + 0.01
    assert "promoted to champion" in run["reason"]
    described = svc.registry.describe("ringy")
    assert described["aliases"]["champion"] == 2
    lineage = svc.registry.describe("ringy")["versions"][1]["lineage"]
    assert (
        lineage["parent_version"] == 1
        and lineage["training_run"] == str(run["id"])
        and lineage["rows"] == 2400
        and lineage["evaluation_set"] == 1
    )
    assert lineage["params"]["n_estimators"] == "30", "cloned: the champion's parameters"
    window = lineage["data_window"]
    assert window["last_example_id"] - window["first_example_id"] >= 2399 and window["from"] <= window["to"]
    served = client.post("/v1/models/ringy/predictions", json={"inputs": [{"x0": 0.1, "x1": 0.2}]}).json
    assert served["model"]["version"] == 2


def test_a_retrain_on_data_where_it_is_worse_keeps_the_champion_and_says_why(app, svc, tmp_path):
    rng = np.random.default_rng(1)
    register(
        svc, tmp_path, "steady", RandomForestClassifier(n_estimators=30, random_state=0), ring(rng, 4000)
    )
    # New examples whose labels are 30% wrong: a forest fitted on them learns the noise.
    noisy = ring(rng, 400)
    flipped = rng.random(len(noisy)) < 0.3
    noisy.loc[flipped, "y"] = 1 - noisy.loc[flipped, "y"]
    import_examples(svc, "steady", noisy)

    run = training.retrain(svc, "steady")

    assert run["status"] == "kept", run["reason"]
    assert run["metrics"]["candidate"]["accuracy"] < run["metrics"]["champion"]["accuracy"]
    assert "kept as challenger" in run["reason"] and "margin" in run["reason"]
    aliases = svc.registry.describe("steady")["aliases"]
    assert aliases == {"champion": 1, "challenger": 2}


def test_a_redelivered_run_trains_once_and_a_locked_model_is_skipped(svc, tmp_path):
    rng = np.random.default_rng(2)
    register(svc, tmp_path, "once", LogisticRegression(), ring(rng, 200))
    import_examples(svc, "once", ring(rng, 200), accept=True)
    run_id = uuid.uuid4()

    first = training.retrain(svc, "once", run_id)
    again = training.retrain(svc, "once", run_id)  # the same message, delivered twice

    assert again == first
    assert [v["version"] for v in svc.registry.describe("once")["versions"]] == [1, 2]

    lock = svc.redis.lock("predq:lock:train:once", timeout=30)
    assert lock.acquire()
    try:
        blocked = training.retrain(svc, "once")
    finally:
        lock.release()
    assert blocked["status"] == "skipped" and "in progress" in blocked["reason"]
    assert len(svc.registry.describe("once")["versions"]) == 2


def test_too_few_examples_skip_the_run_and_runs_are_counted(svc, client, tmp_path):
    rng = np.random.default_rng(3)
    register(svc, tmp_path, "sparse", LogisticRegression(), ring(rng, 100))
    before = _training_runs_metric(client, "sparse", "skipped")

    run = training.retrain(svc, "sparse")

    assert run["status"] == "skipped" and "at least" in run["reason"]
    assert _training_runs_metric(client, "sparse", "skipped") == before + 1


def test_training_data_or_a_reference_sample_without_a_feature_is_refused_by_name(svc, tmp_path):
    from app.errors import InvalidInput

    rng = np.random.default_rng(4)
    data = ring(rng, 100)
    register(svc, tmp_path, "columns", LogisticRegression(), data)
    path = tmp_path / "columns.joblib"
    before = svc.registry.describe("columns")

    with pytest.raises(InvalidInput, match="the training data lacks the model's features: x1"):
        training_data.import_examples(svc, "columns", data.drop(columns=["x1"]), label="y")
    with pytest.raises(InvalidInput, match="the reference data lacks the model's features: x0"):
        svc.registry.register("columns", path, reference=data.drop(columns=["x0"]))

    assert training_data.training_set(svc, "columns")[0].shape[0] == 0, "nothing imported"
    assert svc.registry.describe("columns")["versions"] == before["versions"], "nothing registered"


def test_rest_retrain_runs_on_a_real_worker(app, svc, tokens, worker, tmp_path):
    rng = np.random.default_rng(4)
    register(svc, tmp_path, "remote", LogisticRegression(), ring(rng, 100))
    import_examples(svc, "remote", ring(rng, 300), accept=True)
    admin = client_for(app, tokens["admin"])

    started = admin.post("/v1/models/remote/retrain")

    assert started.status_code == 202
    # Training has its own queue, so a long fit never holds up batches; beat checks schedules.
    conf = svc.celery.conf
    assert conf.task_routes[RETRAIN] == {"queue": "training"}
    assert conf.beat_schedule["schedule-retrains"]["task"] == SCHEDULE_RETRAINS
    run = _wait_for_run(admin, "remote", started.json["run_id"])
    assert run["status"] in ("promoted", "kept") and run["trigger"] == "manual"
    assert client_for(app, tokens["predict"]).post("/v1/models/remote/retrain").status_code == 403


def test_schedules_and_drift_start_runs(svc, app, tokens, worker, tmp_path):
    rng = np.random.default_rng(5)
    data = ring(rng, 2000)
    path = tmp_path / "drifting.joblib"
    joblib.dump(LogisticRegression().fit(data[FEATURES], data["y"]), path)
    svc.registry.register("drifting", path, reference=data[FEATURES])
    import_examples(svc, "drifting", ring(rng, 300))

    cli = app.test_cli_runner().invoke(
        args=["models", "schedule", "drifting", "--every", "3600", "--on-drift"]
    )
    assert cli.exit_code == 0, cli.output
    assert "drifting" in training_runs.start_due_runs(svc)
    assert "drifting" not in training_runs.start_due_runs(svc), "not due again until an hour has passed"

    # Production inputs far from the reference: the drift check queues a run of its own.
    from tests.helpers import insert_queued_job

    for _ in range(5):
        insert_queued_job(svc, "drifting", (rng.normal(3, 1, (50, 2))).tolist())
    import dataclasses

    report = check_model(
        dataclasses.replace(svc, settings=svc.settings.replace(drift_min_rows=100)), "drifting"
    )
    assert report["status"] == "drift" and report["retrain_run"]
    admin = client_for(app, tokens["admin"])
    run = _wait_for_run(admin, "drifting", report["retrain_run"])
    assert run["trigger"] == "drift"


def _wait_for_run(http, name: str, run_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        runs = {r["id"]: r for r in http.get(f"/v1/models/{name}/training-runs").json["runs"]}
        if run_id in runs and runs[run_id]["status"] not in ("queued", "running"):
            return runs[run_id]
        assert time.monotonic() < deadline, f"run {run_id} did not finish: {runs.get(run_id)}"
        time.sleep(0.3)


def _training_runs_metric(client, model: str, outcome: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "predq_training_runs_total" and sample.labels == {
                "model": model,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


@pytest.fixture(autouse=True)
def _settle_queued_jobs(svc):
    """Jobs this module stores by hand stay out of the sweeper tests' way."""
    yield
    from sqlalchemy import update

    from app.db import Job, utcnow

    with svc.engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.model_name == "drifting").values(status="failed", completed_at=utcnow())
        )
