"""A waiting submit is stored by the worker that answers it, or by the API when the wait runs out.

Either way the job is in the database before the client hears of it (app/predictions/jobs.py).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import event, func, select, text, update

from app.db import Batch, Job, utcnow
from app.predictions.items import decode_item, encode_item
from app.predictions.queue import ACTIVE_TTL_SECONDS, RowQueue, active_key
from tests.helpers import (
    client_for,
    count_jobs,
    expected_outputs,
    insert_queued_job,
    stored_estimator,
    wait_until_no_worker_holds,
)
from workers.batch_store import store
from workers.batch_work import BatchWork, batch_status
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


def _deferred_work(model: str, job_ids: list[str], created_at: datetime) -> BatchWork:
    items = [
        decode_item(encode_item(job_id, [[5.1, 3.5, 1.4, 0.2]], n_rows=1, created_at=created_at.isoformat(),
                                deferred=True, owner=None))
        for job_id in job_ids
    ]  # fmt: skip
    return BatchWork(model, 1, uuid.uuid4(), utcnow(), items=items, shadows=[])


def _store_counting_inserts(svc, work: BatchWork, results: list[dict]) -> list[str]:
    """store() the batch; returns the text of each INSERT INTO jobs it sent."""
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO jobs"):
            sent.append(statement)

    event.listen(svc.engine, "before_cursor_execute", seen)
    try:
        store(svc, work, results, status=batch_status(results), worker="test", completed_at=utcnow())
    finally:
        event.remove(svc.engine, "before_cursor_execute", seen)
    return sent


def test_a_batch_of_deferred_jobs_is_inserted_by_one_statement_whose_text_is_the_same_whatever_its_size(svc):
    # The per-row cost it replaced: an INSERT written afresh with a row of placeholders per job,
    # parsed again by the driver for every batch (half of a worker's CPU at 64 clients).
    model = f"one-insert-{uuid.uuid4().hex[:6]}"
    texts = []
    for size in (1, 30):
        work = _deferred_work(model, [str(uuid.uuid4()) for _ in range(size)], utcnow())
        results = [{"id": item.job_id, "status": "succeeded", "outputs": [{"prediction": 1}], "error": None}
                   for item in work.items]  # fmt: skip
        sent = _store_counting_inserts(svc, work, results)
        assert len(sent) == 1, f"a batch of {size} sent {len(sent)} INSERTs into jobs"
        texts += sent
        assert work.not_written == set()
    assert texts[0] == texts[1], "the statement's text depends on the batch's size"
    with svc.engine.connect() as conn:
        assert conn.execute(select(func.count()).where(Job.model_name == model)).scalar_one() == 31


def test_a_deferred_job_is_stored_as_the_stored_road_stores_it(svc):
    model = f"deferred-row-{uuid.uuid4().hex[:6]}"
    created_at = utcnow()
    ok, failed = str(uuid.uuid4()), str(uuid.uuid4())
    work = _deferred_work(model, [ok, failed], created_at)
    error = {"code": "prediction_failed", "message": "ValueError: no", "details": {}}
    results = [{"id": ok, "status": "succeeded", "outputs": [{"prediction": 2, "probabilities": {"a": 0.5}}],
                "error": None},
               {"id": failed, "status": "failed", "outputs": None, "error": error}]  # fmt: skip
    _store_counting_inserts(svc, work, results)

    with svc.engine.connect() as conn:
        rows = {str(r.id): r for r in conn.execute(select(Job).where(Job.model_name == model))}
        # A None in a JSON column is JSON null on every road (SQLAlchemy's JSON type), not SQL NULL.
        nulls = dict(conn.execute(
            text("SELECT id::text, json_typeof(outputs) || ',' || json_typeof(error) FROM jobs"
                 " WHERE model_name = :model"), {"model": model}).all())  # fmt: skip
    assert nulls == {ok: "array,null", failed: "null,object"}
    assert (rows[ok].status, rows[ok].outputs, rows[ok].error) == ("succeeded", results[0]["outputs"], None)
    assert (rows[failed].status, rows[failed].outputs, rows[failed].error) == ("failed", None, error)
    for row in rows.values():
        assert (row.model_version, row.n_rows, row.inputs, row.cached_rows) == (
            1,
            1,
            [[5.1, 3.5, 1.4, 0.2]],
            0,
        )
        assert (row.created_at, row.priority, row.deadline, row.batch_id) == (
            created_at,
            "normal",
            None,
            work.id,
        )
        assert row.started_at == work.started_at and row.completed_at >= row.started_at


def test_a_deferred_job_cancelled_meanwhile_keeps_its_status_and_is_neither_announced_nor_published(svc):
    # The API stored it when its client's wait ran out, and the client cancelled it: the batch's
    # insert meets a row done for good, leaves it as it is and reports it not written.
    model = f"deferred-cancelled-{uuid.uuid4().hex[:6]}"
    # Stored with the created_at its queued item carries, as the API stores it (on PostgreSQL
    # the key is (id, created_at): app/db/ids.py).
    created_at = utcnow()
    cancelled = insert_queued_job(svc, model, [[5.1, 3.5, 1.4, 0.2]], created_at=created_at)
    with svc.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == cancelled).values(status="cancelled"))
    fresh = str(uuid.uuid4())
    work = _deferred_work(model, [str(cancelled), fresh], created_at)
    results = [{"id": item.job_id, "status": "succeeded", "outputs": [{"prediction": 1}], "error": None}
               for item in work.items]  # fmt: skip
    _store_counting_inserts(svc, work, results)

    assert work.not_written == {str(cancelled)}
    with svc.engine.connect() as conn:
        statuses = dict(conn.execute(select(Job.id, Job.status).where(Job.model_name == model)).all())
    assert statuses == {cancelled: "cancelled", uuid.UUID(fresh): "succeeded"}
