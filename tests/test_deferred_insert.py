"""A waiting submit is stored by the worker that answers it, or by the API when the wait runs out.

Either way the job is in the database before the client hears of it (app/predictions/jobs.py).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from app.db import Batch, Job
from app.predictions.items import encode_item
from app.predictions.queue import ACTIVE_TTL_SECONDS, RowQueue, active_key
from tests.helpers import (
    client_for,
    count_jobs,
    expected_outputs,
    stored_estimator,
    wait_until_no_worker_holds,
)
from workers.batching import run_batch


def stored(svc, job_id: str) -> Job | None:
    with svc.engine.connect() as conn:
        return conn.execute(select(Job).where(Job.id == uuid.UUID(job_id))).one_or_none()


def test_a_finished_waiting_job_is_stored_by_its_batch(client, svc, registered, worker):
    rows = [[4.9, 3.1, 1.52, 0.1], [6.4, 2.9, 4.33, 1.3]]

    response = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": rows})

    assert response.status_code == 200, response.json
    row = stored(svc, response.json["id"])
    assert row is not None and row.status == "succeeded"
    assert row.inputs == rows and row.n_rows == 2 and row.cached_rows == 0
    assert row.outputs == response.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows)
    assert row.created_at <= row.started_at <= row.completed_at
    with svc.engine.connect() as conn:
        batch = conn.execute(select(Batch).where(Batch.id == row.batch_id)).one()
    assert batch.model_name == "iris" and batch.n_rows >= 2
    assert client.get(f"/v1/predictions/{row.id}").json["outputs"] == row.outputs


def _hold_queue(svc, model: str) -> None:
    """Mark the queue as held by a worker that is not there: pushes then wake nobody."""
    wait_until_no_worker_holds(svc, model, 1)
    svc.redis.set(active_key(model, 1), "1", ex=ACTIVE_TTL_SECONDS)


def test_a_wait_that_runs_out_stores_the_job_before_the_202(client, svc, artifacts, worker):
    svc.registry.register("unanswered", artifacts["iris"])
    _hold_queue(svc, "unanswered")
    rows = [[5.7, 2.6, 3.51, 1.0]]

    jobs_before = count_jobs(svc)
    with ThreadPoolExecutor(1) as pool:
        tick = time.monotonic()
        waiting = pool.submit(
            client.post, "/v1/models/unanswered/predictions?wait=1.5", json={"inputs": rows}
        )
        time.sleep(0.7)
        assert count_jobs(svc) == jobs_before, "while its client waits, the job has no row yet"
        response = waiting.result()

    assert time.monotonic() - tick >= 1.4, "it waited"
    assert response.status_code == 202 and response.json["status"] == "queued"
    row = stored(svc, response.json["id"])
    assert row is not None and row.status == "queued", "a 202 means the job is stored"
    assert row.inputs == rows and row.created_at.isoformat() == response.json["created_at"]

    # The rows were still queued: a batch answers the job and fills in the stored row.
    report = run_batch(svc, "unanswered", 1)

    assert report.status == "succeeded" and report.jobs == 1
    done = stored(svc, response.json["id"])
    assert done.status == "succeeded"
    assert done.outputs == expected_outputs(stored_estimator(svc, "unanswered"), rows)
    assert client.get(response.headers["Location"]).json["outputs"] == done.outputs


def test_a_deferred_job_queued_again_keeps_its_first_answer(client, svc, artifacts, worker):
    svc.registry.register("deferred-twice", artifacts["iris"])
    rows = [[5.1, 3.8, 1.62, 0.2]]
    first = client.post("/v1/models/deferred-twice/predictions?wait=20", json={"inputs": rows}).json
    assert first["status"] == "succeeded"
    before = stored(svc, first["id"])

    # Its rows again, still marked as having no row (a redelivery): computed, never rewritten.
    _hold_queue(svc, "deferred-twice")
    RowQueue(svc.redis, "deferred-twice", 1).push(
        encode_item(first["id"], rows, n_rows=1, created_at=first["created_at"], deferred=True)
    )
    run_batch(svc, "deferred-twice", 1)

    after = stored(svc, first["id"])
    assert (after.batch_id, after.completed_at, after.outputs) == (
        before.batch_id,
        before.completed_at,
        before.outputs,
    )


@pytest.mark.parametrize("wait", [0, 1])
def test_with_redis_unreachable_a_job_is_stored_and_accepted(settings, artifacts, tokens, wait):
    """Redis is the fast path: with it down, a submit (waiting or not) still stores the job and says 202."""
    from app import create_app
    from scripts.local import free_port

    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    svc = app.extensions["predq"]
    svc.registry.register(f"redis-down-{wait}", artifacts["iris"])

    response = client_for(app, tokens["predict"]).post(
        f"/v1/models/redis-down-{wait}/predictions?wait={wait}", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )

    assert response.status_code == 202, response.json
    row = stored(svc, response.json["id"])
    assert row is not None and row.status == "queued", "the sweeper will queue it once Redis is back"
