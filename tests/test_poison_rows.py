"""A row the model refuses fails its own job only, never the jobs batched with it."""

from __future__ import annotations

import uuid

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sqlalchemy import select

from app import throughput
from app.db import Job, utcnow
from app.predictions.items import encode_item
from app.predictions.queue import RowQueue, cache_keys
from tests.helpers import insert_queued_job
from workers.batching import run_batch

GOOD = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.mark.parametrize(
    "estimator,poison",
    [
        # Beyond float32: both read their input as float32 and refuse the whole call.
        (GradientBoostingClassifier(n_estimators=10, random_state=0), 1e308),
        (RandomForestClassifier(n_estimators=10, random_state=0), 3.5e38),
    ],
    ids=["gradient-boosting", "forest"],
)
def test_a_refused_row_fails_only_its_own_job(svc, tmp_path, estimator, poison):
    iris = load_iris()
    fitted = estimator.fit(iris.data, iris.target)
    joblib.dump(fitted, tmp_path / "model.joblib")
    model = f"poison-{uuid.uuid4().hex[:6]}"
    svc.registry.register(model, tmp_path / "model.joblib")
    # Pushed as the API would, past its own check (which refuses such a row with a 422).
    jobs = [[GOOD[0]], [[5.1, poison, 1.4, 0.2]], [GOOD[1], GOOD[2]]]
    ids = [insert_queued_job(svc, model, rows) for rows in jobs]
    queue = RowQueue(svc.redis, model, 1)
    for job_id, rows in zip(ids, jobs, strict=True):
        queue.push(encode_item(str(job_id), rows, n_rows=len(rows), created_at=utcnow().isoformat()))

    report = run_batch(svc, model, 1)

    with svc.engine.connect() as conn:
        stored = {row.id: row for row in conn.execute(select(Job).where(Job.id.in_(ids)))}
    good, bad, good_too = (stored[i] for i in ids)
    assert report.status == "partly_failed" and report.jobs == 3
    assert bad.status == "failed" and bad.error["code"] == "prediction_failed"
    assert "float32" in bad.error["message"] or "infinity" in bad.error["message"]

    def cached(rows: list[list[float]]) -> int:
        return svc.redis.exists(*cache_keys(model, 1, np.array(rows)))

    assert cached(jobs[0]) == 1 and cached(jobs[2]) == 2, "the good jobs' rows are cached"
    assert cached(jobs[1]) == 0, "nothing is cached for the refused row"
    for job, rows in ((good, jobs[0]), (good_too, jobs[2])):
        assert job.status == "succeeded"
        assert [o["prediction"] for o in job.outputs] == fitted.predict(np.array(rows)).tolist()
        probabilities = [list(o["probabilities"].values()) for o in job.outputs]
        assert np.allclose(probabilities, fitted.predict_proba(np.array(rows)))


def test_a_batchs_succeeded_and_failed_jobs_are_counted_in_the_minutes_throughput(svc, tmp_path):
    # Counted in the same call that publishes the batch (app/predictions/lua/publish.lua).
    iris = load_iris()
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target),
                tmp_path / "model.joblib")  # fmt: skip
    model = f"counted-{uuid.uuid4().hex[:6]}"
    svc.registry.register(model, tmp_path / "model.joblib")
    jobs = [[GOOD[0]], [[5.1, 3.5e38, 1.4, 0.2]], [GOOD[1], GOOD[2]]]
    queue = RowQueue(svc.redis, model, 1)
    for rows in jobs:
        job_id = insert_queued_job(svc, model, rows)
        queue.push(encode_item(str(job_id), rows, n_rows=len(rows), created_at=utcnow().isoformat()))

    run_batch(svc, model, 1)

    counted = {"ok": 0, "failed": 0}
    for key in svc.redis.scan_iter(match=f"{throughput.PREFIX}*"):
        for kind in counted:
            counted[kind] += int(svc.redis.hget(key, f"{model}|{kind}") or 0)
        assert 0 < svc.redis.ttl(key) <= throughput.KEEP_SECONDS, "every minute's counts expire"
    assert counted == {"ok": 2, "failed": 1}
