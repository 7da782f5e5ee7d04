"""The sweeper's retention: old finished jobs and their batches go, unfinished jobs stay;
feedback and shadow outputs have retentions of their own; a backlog goes batch after batch
within the sweep's budget. Its re-queueing: only stuck jobs whose rows are on no queue."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

from sqlalchemy import insert, select, update

from app.db import Batch, Feedback, Job, ShadowOutput, TrainingRun, make_engine, utcnow
from app.migrate import upgrade
from app.predictions.items import encode_item
from app.predictions.queue import RowQueue, active_key, queue_keys
from tests.helpers import count_rows, insert_queued_job
from workers.retention import RETENTION_BATCH_ROWS, expire_all
from workers.sweeper import fail_stale_training_runs, requeue_stuck_jobs, waiting_job_ids


def expire_old_jobs(svc) -> int:
    return expire_all(svc)["jobs"]


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
             "status": "succeeded", "inference_seconds": 0.001, "started_at": completed_at, "completed_at": completed_at,
             "created_at": completed_at},
        )  # fmt: skip
    return batch_id


def test_jobs_past_retention_are_deleted_and_the_rest_kept(settings, svc, registered, client):
    # Days, not hours: on PostgreSQL a day's partition goes whole once past retention
    # (tests/test_partitions.py); rows of days with no partition of their own go by age.
    retention = settings.replace(job_retention_seconds=2 * 86400)
    old, recent = utcnow() - timedelta(days=3), utcnow() - timedelta(minutes=5)
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


def _finished_jobs(svc, n: int, completed_at) -> None:
    rows = [{"id": uuid.uuid4(), "model_name": "iris", "model_version": 1, "status": "succeeded", "n_rows": 1,
             "inputs": [[5.0, 3.4, 1.5, 0.2]], "outputs": [{"prediction": 0}], "cached_rows": 0,
             "created_at": completed_at, "completed_at": completed_at} for _ in range(n)]  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Job), rows)


def _old_jobs_left(svc, cutoff) -> int:
    with svc.engine.connect() as conn:
        return len(conn.execute(select(Job.id).where(Job.completed_at < cutoff)).all())


def test_a_backlog_goes_in_one_sweep_batch_after_batch(settings, svc):
    backlog = 2 * RETENTION_BATCH_ROWS + 17
    old = utcnow() - timedelta(days=2)
    _finished_jobs(svc, backlog, old)
    retention = dataclasses.replace(svc, settings=settings.replace(job_retention_seconds=86400))

    assert expire_old_jobs(retention) == backlog, "not 10,000 per sweep: until none is left"
    assert _old_jobs_left(svc, utcnow() - timedelta(days=1)) == 0


def test_retention_runs_on_sqlite_too(settings, svc, tmp_path):
    """make run's embedded database: the same statements, row by row in batches."""
    url = f"sqlite:///{tmp_path / 'retention.sqlite3'}"
    upgrade(url)
    embedded = dataclasses.replace(
        svc, engine=make_engine(url), settings=settings.replace(job_retention_seconds=3600)
    )
    _finished_jobs(embedded, RETENTION_BATCH_ROWS + 3, utcnow() - timedelta(hours=2))
    _finished_jobs(embedded, 2, utcnow())

    assert expire_old_jobs(embedded) == RETENTION_BATCH_ROWS + 3
    assert count_rows(embedded, Job) == 2


def test_a_sweep_stops_deleting_once_its_budget_is_spent(settings, svc):
    _finished_jobs(svc, RETENTION_BATCH_ROWS + 10, utcnow() - timedelta(days=2))
    no_time = dataclasses.replace(
        svc, settings=settings.replace(job_retention_seconds=86400, retention_budget_seconds=0)
    )

    assert expire_old_jobs(no_time) == RETENTION_BATCH_ROWS, "one batch, then the next sweep"
    assert expire_old_jobs(no_time) == 10


def test_feedback_and_shadow_outputs_have_retentions_of_their_own(settings, svc):
    old, recent = utcnow() - timedelta(days=3), utcnow() - timedelta(hours=1)
    with svc.engine.begin() as conn:
        for created in (old, recent):
            job_id = uuid.uuid4()
            conn.execute(insert(Feedback), {"job_id": job_id, "model_name": "iris", "model_version": 1, "row": 0,
                                            "label": 1, "prediction": 1, "created_at": created})  # fmt: skip
            conn.execute(insert(ShadowOutput), {"job_id": job_id, "model_name": "iris", "model_version": 2,
                                                "outputs": [{"prediction": 1}], "batch_id": uuid.uuid4(),
                                                "created_at": created})  # fmt: skip
    idle_batch = _batch(svc, old)  # a shadow's batch: no job refers to it
    feedback_before, shadows_before = count_rows(svc, Feedback), count_rows(svc, ShadowOutput)
    two_days = settings.replace(
        feedback_retention_seconds=2 * 86400,
        shadow_output_retention_seconds=2 * 86400,
        job_retention_seconds=2 * 86400,
    )

    expired = expire_all(dataclasses.replace(svc, settings=two_days))

    assert expired["feedback"] >= 1 and expired["shadow_outputs"] >= 1 and expired["batches"] >= 1
    assert count_rows(svc, Feedback) == feedback_before - expired["feedback"]
    with svc.engine.connect() as conn:
        assert (
            conn.execute(
                select(Feedback.id).where(Feedback.created_at < utcnow() - timedelta(days=2))
            ).first()
            is None
        )
        assert conn.execute(select(Feedback.id).where(Feedback.created_at == recent)).first() is not None
        assert (
            conn.execute(select(ShadowOutput.id).where(ShadowOutput.created_at == recent)).first() is not None
        )
        assert conn.execute(select(Batch.id).where(Batch.id == idle_batch)).first() is None
    assert count_rows(svc, ShadowOutput) == shadows_before - expired["shadow_outputs"]
    keep = settings.replace(
        feedback_retention_seconds=0, shadow_output_retention_seconds=0, job_retention_seconds=0,
        webhook_retention_seconds=0,
    )  # fmt: skip
    assert expire_all(dataclasses.replace(svc, settings=keep)) == {
        "idempotency_keys": 0, "jobs": 0, "batches": 0, "feedback": 0, "shadow_outputs": 0, "webhook_deliveries": 0
    }  # fmt: skip


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


# -- re-queueing stuck jobs -------------------------------------------------------------------

ROW = [5.0, 3.4, 1.5, 0.2]


def _stuck_version(svc) -> str:
    """A model name of its own, its queue marked as held: a push wakes no worker, so what the
    sweeper queues stays on the queue for the test to read."""
    name = f"stuck-{uuid.uuid4().hex[:6]}"
    svc.redis.set(active_key(name, 1), b"1", ex=600)
    return name


def _waiting_copies(svc, name: str) -> dict[str, int]:
    """How many items of each job wait on the version's queues."""
    copies: dict[str, int] = {}
    for key in queue_keys(name, 1):
        for item in svc.redis.lrange(key, 0, -1):
            job_id = item.split(b"|")[2].decode()
            copies[job_id] = copies.get(job_id, 0) + 1
    return copies


def _done_with(svc, name: str, ids: list[uuid.UUID]) -> None:
    """Nothing of this test lingers for the sweeps of the tests that follow."""
    svc.redis.delete(*queue_keys(name, 1), active_key(name, 1))
    with svc.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id.in_(ids)).values(status="failed", completed_at=utcnow()))


def test_a_stuck_job_is_queued_again_only_when_its_row_is_on_no_queue(svc):
    name = _stuck_version(svc)
    long_ago = utcnow() - timedelta(hours=1)
    starving = insert_queued_job(svc, name, [ROW], created_at=long_ago)  # still waits, behind high work
    RowQueue(svc.redis, name, 1, priority="low").push(
        encode_item(str(starving), [ROW], n_rows=1, created_at=long_ago.isoformat(), priority="low")
    )
    lost = insert_queued_job(svc, name, [ROW], created_at=long_ago)  # Redis lost its row
    orphaned = insert_queued_job(svc, name, [ROW], created_at=long_ago)  # its worker died mid-batch
    with svc.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == orphaned).values(status="running", started_at=long_ago))
    ids = [starving, lost, orphaned]
    try:
        for sweep in (1, 2, 3):
            requeue_stuck_jobs(svc)

            assert _waiting_copies(svc, name) == {str(job_id): 1 for job_id in ids}, (
                f"after sweep {sweep}: one item each; the lost job's and the dead worker's queued "
                "again once, the starving job's never"
            )
    finally:
        _done_with(svc, name, ids)


def test_jobs_still_waiting_never_hide_a_lost_one_behind_them(svc):
    """More stuck jobs still on their queue than one sweep re-queues: the lost one, younger
    than all of them, is found all the same."""
    name = _stuck_version(svc)
    # Older than any other test's jobs: these come first in the sweeper's order.
    ancient = utcnow() - timedelta(days=3650)
    waiting = [
        insert_queued_job(svc, name, [ROW], created_at=ancient + timedelta(seconds=i)) for i in range(3)
    ]
    queue = RowQueue(svc.redis, name, 1)
    for job_id in waiting:
        queue.push(encode_item(str(job_id), [ROW], n_rows=1, created_at=ancient.isoformat()))
    lost = insert_queued_job(svc, name, [ROW], created_at=ancient + timedelta(minutes=1))
    try:
        assert requeue_stuck_jobs(svc, limit=2) >= 1
        assert _waiting_copies(svc, name) == {str(job_id): 1 for job_id in [*waiting, lost]}
    finally:
        _done_with(svc, name, [*waiting, lost])


def test_the_sweeper_reads_every_waiting_job_of_a_long_queue(svc, monkeypatch):
    """Queues are read a page at a time (here 7 items a page), every priority's."""
    import workers.sweeper

    monkeypatch.setattr(workers.sweeper, "QUEUED_IDS_PAGE", 7)
    name = f"long-{uuid.uuid4().hex[:6]}"
    pushed = [str(uuid.uuid4()) for _ in range(50)]
    queues = [RowQueue(svc.redis, name, 1, priority=p) for p in ("high", "normal", "low")]
    try:
        for i, job_id in enumerate(pushed):
            queues[i % 3].push(encode_item(job_id, [ROW], n_rows=1, created_at=utcnow().isoformat()))
        assert waiting_job_ids(svc.redis, name, 1) == set(pushed)
        assert waiting_job_ids(svc.redis, name, 1, explained=True) == set(), "the explained rows' queues"
    finally:
        svc.redis.delete(*queue_keys(name, 1), active_key(name, 1))
