"""Submit and poll through the API with a real worker; outputs must equal in-process calls."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from app.db import Batch, Job, utcnow
from tests.helpers import (
    client_for,
    count_rows,
    expected_outputs,
    insert_queued_job,
    stored_estimator,
    wait_until_no_worker_holds,
)
from workers.sweeper import requeue_stuck_jobs

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 4.9, 1.5]]
DIABETES_ROWS = np.random.default_rng(1).normal(0, 0.05, size=(4, 10)).round(6).tolist()


def as_objects(estimator: Any, rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(estimator.feature_names_in_, row, strict=True)) for row in rows]


@pytest.mark.parametrize("model,rows", [("iris", IRIS_ROWS), ("diabetes", DIABETES_ROWS)])
@pytest.mark.parametrize("row_format", ["lists", "objects"])
def test_outputs_equal_in_process_predictions(client, svc, registered, worker, model, rows, row_format):
    estimator = stored_estimator(svc, model)
    # Shift rows per format so neither run is answered from the other's cache.
    rows = [[v + (0.001 if row_format == "objects" else 0.0) for v in row] for row in rows]
    payload = rows if row_format == "lists" else as_objects(estimator, rows)

    response = client.post(f"/v1/models/{model}/predictions?wait=20", json={"inputs": payload})

    assert response.status_code == 200, response.json
    job = response.json
    assert job["status"] == "succeeded"
    assert job["model"] == {"name": model, "version": 1}
    assert job["outputs"] == expected_outputs(estimator, rows)
    assert response.headers["Location"] == f"/v1/predictions/{job['id']}"


def test_submit_then_poll(client, svc, registered, worker):
    rows = [[4.4, 2.9, 1.4, 0.21]]
    submitted = client.post("/v1/models/iris/predictions", json={"inputs": rows})

    assert submitted.status_code == 202
    assert submitted.json["status"] == "queued"
    assert set(submitted.json) == {"id", "status", "done", "model", "outputs", "error", "priority", "deadline",
                                   "created_at", "completed_at", "webhook"}  # fmt: skip
    assert submitted.json["done"] is False and submitted.json["priority"] == "normal"
    assert submitted.json["deadline"] is None, "QUEUE_TTL_SECONDS unset: no deadline"
    polled = client.get(f"{submitted.headers['Location']}?wait=20")
    assert polled.status_code == 200
    assert polled.json["status"] == "succeeded" and polled.json["done"] is True
    assert polled.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows)
    # The stored record holds inputs, outputs, the version served and timings.
    with svc.engine.connect() as conn:
        row = conn.execute(select(Job).where(Job.id == _uuid(submitted.json["id"]))).one()
    assert row.inputs == rows and row.outputs == polled.json["outputs"]
    assert row.model_version == 1 and row.batch_id is not None
    assert row.created_at <= row.started_at <= row.completed_at


def test_repeated_rows_are_answered_from_cache_without_a_worker(client, svc, registered, worker):
    rows = [[5.0, 3.3, 1.41, 0.2], [6.1, 2.8, 4.71, 1.2]]
    first = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": rows})
    assert first.status_code == 200
    batches_before = count_rows(svc, Batch)

    again = client.post("/v1/models/iris/predictions", json={"inputs": rows})

    assert again.status_code == 200, "all rows cached: answered at once"
    assert again.json["status"] == "succeeded"
    assert again.json["outputs"] == first.json["outputs"]
    assert again.json["id"] != first.json["id"]
    assert count_rows(svc, Batch) == batches_before
    assert client.get(f"/v1/predictions/{again.json['id']}").json["outputs"] == first.json["outputs"]


def test_partly_cached_request_computes_only_the_new_rows(client, svc, registered, worker):
    cached_row, new_row = [5.2, 3.4, 1.42, 0.2], [6.9, 3.1, 5.41, 2.1]
    client.post("/v1/models/iris/predictions?wait=20", json={"inputs": [cached_row]})

    response = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": [new_row, cached_row]})

    assert response.status_code == 200
    assert response.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), [new_row, cached_row])
    with svc.engine.connect() as conn:
        job = conn.execute(select(Job).where(Job.id == _uuid(response.json["id"]))).one()
        batch = conn.execute(select(Batch).where(Batch.id == job.batch_id)).one()
    assert job.cached_rows == 1
    assert batch.n_rows == 1, "the cached row did not reach the worker"


def test_a_job_lost_from_redis_is_recovered_by_the_sweeper(client, svc, registered, worker, predict_key_id):
    """A job committed to the database but missing from Redis (say Redis restarted)."""
    rows = [[5.5, 2.4, 3.81, 1.1]]
    old = utcnow() - timedelta(seconds=svc.settings.stuck_job_seconds + 5)
    job_id = insert_queued_job(svc, "iris", rows, created_at=old, owner=predict_key_id)

    assert requeue_stuck_jobs(svc) >= 1
    done = client.get(f"/v1/predictions/{job_id}?wait=20").json

    assert done["status"] == "succeeded"
    assert done["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows)


def test_a_tampered_artifact_is_refused_by_the_worker(client, svc, artifacts, worker):
    served = svc.registry.register("tampered", artifacts["iris"])
    path = Path(svc.settings.artifact_root) / served.artifact_path
    path.write_bytes(path.read_bytes() + b"\0")

    response = client.post("/v1/models/tampered/predictions?wait=20", json={"inputs": [IRIS_ROWS[0]]})

    assert response.json["status"] == "failed"
    assert response.json["error"]["code"] == "artifact_integrity_error"
    assert response.json["outputs"] is None


def test_version_and_alias_select_what_serves(client, svc, artifacts, worker):
    svc.registry.register("versioned", artifacts["iris"])
    svc.registry.register("versioned", artifacts["iris"], alias="challenger")
    row = [[5.0, 3.0, 1.6, 0.21]]

    default = client.post("/v1/models/versioned/predictions?wait=20", json={"inputs": row}).json
    pinned = client.post("/v1/models/versioned/predictions?wait=20", json={"inputs": row, "version": 2}).json
    aliased = client.post(
        "/v1/models/versioned/predictions?wait=20", json={"inputs": row, "alias": "challenger"}
    ).json

    assert default["model"]["version"] == 1, "champion is the first version"
    assert pinned["model"]["version"] == 2
    assert aliased["model"]["version"] == 2
    assert default["status"] == pinned["status"] == aliased["status"] == "succeeded"


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def test_two_clients_waiting_on_one_job_both_get_it(client, svc, registered, worker, app, tokens):
    submitted = client.post("/v1/models/iris/predictions", json={"inputs": [[4.6, 3.2, 1.43, 0.2]]}).json

    def wait() -> dict:
        return client_for(app, tokens["predict"]).get(f"/v1/predictions/{submitted['id']}?wait=20").json

    tick = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: wait(), range(2))

    assert first["status"] == second["status"] == "succeeded"
    assert first["outputs"] == second["outputs"]
    # Both woke on the hand-off: a waiter left to time out would take the full 20 s.
    assert time.monotonic() - tick < 10


def test_a_long_poll_waits_its_full_time_for_a_job_still_queued(client, svc, registered, predict_key_id):
    """Longer than redis-py's default 5 s socket timeout, which once cut long-polls short."""
    job_id = insert_queued_job(svc, "iris", [IRIS_ROWS[0]], owner=predict_key_id)

    tick = time.monotonic()
    response = client.get(f"/v1/predictions/{job_id}?wait=6.5")

    assert response.status_code == 200
    assert response.json["status"] == "queued"
    assert time.monotonic() - tick >= 6.4


def test_a_queue_whose_wakeup_was_lost_is_drained_by_the_sweep(
    client, svc, registered, worker, predict_key_id
):
    """Rows sit in a non-empty queue with no task sent (the message was lost): later
    pushes send none either, until the sweeper wakes a worker."""
    from app.predictions.items import encode_item
    from app.predictions.queue import RowQueue
    from workers.sweeper import wake_workers

    job_id = insert_queued_job(svc, "diabetes", [[0.01] * 10], owner=predict_key_id)
    wait_until_no_worker_holds(svc, "diabetes", 1)
    item = encode_item(
        str(job_id), [[0.01] * 10], n_rows=1, created_at=utcnow().isoformat(), owner=predict_key_id
    )
    RowQueue(svc.redis, "diabetes", 1).push(item)

    stalled = client.get(f"/v1/predictions/{job_id}?wait=1").json
    assert stalled["status"] == "queued", "no task was sent, so no worker looked"
    assert wake_workers(svc) >= 1
    done = client.get(f"/v1/predictions/{job_id}?wait=20").json

    assert done["status"] == "succeeded"
    assert done["outputs"] == expected_outputs(stored_estimator(svc, "diabetes"), [[0.01] * 10])


def test_a_job_queued_twice_keeps_its_first_answer(client, svc, artifacts, worker):
    """The sweeper may re-queue a job a worker already answered: the second batch skips it."""
    from app.predictions.items import encode_item
    from app.predictions.queue import RowQueue
    from workers.batching import run_batch

    svc.registry.register("requeued", artifacts["iris"])
    rows = [[5.3, 3.7, 1.5, 0.2]]
    first = client.post("/v1/models/requeued/predictions?wait=20", json={"inputs": rows}).json
    assert first["status"] == "succeeded"
    batches_before = count_rows(svc, Batch)

    # The same job again, as the sweeper would queue it; run that batch here, in-process.
    wait_until_no_worker_holds(svc, "requeued", 1)
    RowQueue(svc.redis, "requeued", 1).push(
        encode_item(first["id"], rows, n_rows=1, created_at=first["created_at"])
    )
    report = run_batch(svc, "requeued", 1)

    assert report.status == "duplicate" and report.rows == 0
    assert count_rows(svc, Batch) == batches_before, "no model call for a job already answered"
    again = client.get(f"/v1/predictions/{first['id']}").json
    assert again["outputs"] == first["outputs"] and again["completed_at"] == first["completed_at"]


def test_cache_ttl_zero_turns_the_cache_off(settings, worker, tokens):
    from app import create_app

    uncached = create_app(settings.replace(cache_ttl_seconds=0))
    rows = [[5.8, 2.7, 4.1, 1.01]]
    http = client_for(uncached, tokens["predict"])
    first = http.post("/v1/models/iris/predictions?wait=20", json={"inputs": rows}).json
    second = http.post("/v1/models/iris/predictions", json={"inputs": rows})

    assert first["status"] == "succeeded"
    assert second.status_code == 202, "the worker cached the row, but this API must not read it"
    svc = uncached.extensions["predq"]
    with svc.engine.connect() as conn:
        assert (
            conn.execute(select(Job.cached_rows).where(Job.id == _uuid(second.json["id"]))).scalar_one() == 0
        )
