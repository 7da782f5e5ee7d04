"""The sweeper's retention: old finished jobs and their batches go; unfinished jobs stay."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

from sqlalchemy import insert, select, update

from app.db import Batch, Job, TrainingRun, utcnow
from tests.helpers import insert_queued_job
from workers.sweeper import expire_old_jobs, fail_stale_training_runs


def _finish(svc, job_id: uuid.UUID, completed_at, batch_id: uuid.UUID | None = None) -> None:
    with svc.engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job_id)
            .values(status="succeeded", outputs=[{"prediction": 0}], completed_at=completed_at, batch_id=batch_id)
        )  # fmt: skip


def _batch(svc, completed_at) -> uuid.UUID:
    batch_id = uuid.uuid4()
    with svc.engine.begin() as conn:
        conn.execute(
            insert(Batch),
            {"id": batch_id, "model_name": "iris", "model_version": 1, "n_rows": 1, "n_jobs": 1, "worker": "test",
             "status": "succeeded", "inference_seconds": 0.001, "started_at": completed_at, "completed_at": completed_at},
        )  # fmt: skip
    return batch_id


def test_jobs_past_retention_are_deleted_and_the_rest_kept(settings, svc, registered, client):
    retention = settings.replace(job_retention_seconds=3600)
    old, recent = utcnow() - timedelta(hours=2), utcnow() - timedelta(minutes=5)
    old_batch = _batch(svc, old)
    expired = insert_queued_job(svc, "iris", [[5.0, 3.4, 1.5, 0.2]], created_at=old)
    _finish(svc, expired, old, old_batch)
    kept = insert_queued_job(svc, "iris", [[5.0, 3.4, 1.5, 0.2]], created_at=recent)
    _finish(svc, kept, recent)
    never_finished = insert_queued_job(svc, "iris", [[5.0, 3.4, 1.5, 0.2]], created_at=old)

    deleted = expire_old_jobs(dataclasses.replace(svc, settings=retention))

    assert deleted >= 1
    with svc.engine.connect() as conn:
        left = set(conn.execute(select(Job.id).where(Job.id.in_([expired, kept, never_finished]))).scalars())
        batch_left = conn.execute(select(Batch.id).where(Batch.id == old_batch)).first()
    assert left == {kept, never_finished}, "a queued job is never deleted, however old"
    assert batch_left is None, "the expired job's batch went with it"
    assert client.get(f"/v1/predictions/{expired}").status_code == 404
    # The stuck job must not linger for the sweeper tests that follow.
    with svc.engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == never_finished).values(status="failed", completed_at=utcnow())
        )


def test_retention_zero_keeps_everything(settings, svc):
    keep_all = dataclasses.replace(svc, settings=settings.replace(job_retention_seconds=0))
    assert expire_old_jobs(keep_all) == 0


def test_training_runs_that_never_finish_are_marked_failed(settings, svc):
    stuck, fresh = uuid.uuid4(), uuid.uuid4()
    long_ago = utcnow() - timedelta(hours=2)
    with svc.engine.begin() as conn:
        conn.execute(insert(TrainingRun), [
            {"id": stuck, "model_name": "iris", "trigger": "manual", "status": "running", "started_at": long_ago},
            {"id": fresh, "model_name": "iris", "trigger": "manual", "status": "queued", "started_at": utcnow()},
        ])  # fmt: skip

    assert (
        fail_stale_training_runs(
            dataclasses.replace(svc, settings=settings.replace(training_lock_seconds=3600))
        )
        >= 1
    )

    with svc.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(TrainingRun.id, TrainingRun.status).where(TrainingRun.id.in_([stuck, fresh]))
            ).all()
        )
    assert statuses == {stuck: "failed", fresh: "queued"}
    with svc.engine.begin() as conn:  # not a run the lifecycle tests should see
        conn.execute(update(TrainingRun).where(TrainingRun.id == fresh).values(status="failed"))
