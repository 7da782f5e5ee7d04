"""Beat's housekeeping: expire jobs past their deadline, re-queue jobs that waited too long
(retention, deleting what is past it, is workers/retention.py).

Redis is the fast path, not the record: if it lost a queue (restart without persistence)
or a worker died holding a batch, the jobs are still ``queued``/``running`` in the
database. Re-queueing is safe because result writes are idempotent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select, update

from app.db import Job, TrainingRun, utcnow
from app.predictions.ending import end_unrun
from app.predictions.items import encode_item
from app.predictions.queue import enqueue, queued_versions, wake_worker
from app.predictions.view import JobStatus
from app.services import Services

log = logging.getLogger(__name__)


def wake_workers(svc: Services) -> int:
    """Send a batch task for every non-empty row queue; returns how many were sent.

    The API sends one only when its push finds no worker holding the queue. If that task
    message was lost (broker restart, a worker killed at the wrong moment), pushes send
    none while the queue is still marked as held (up to ACTIVE_TTL_SECONDS), and if no
    push comes after that, nothing but this would drain the rows already waiting.
    """
    queues = queued_versions(svc.redis)
    for name, version, explained in queues:
        wake_worker(svc, name, version, explained=explained)
    return len(queues)


def expire_overdue_jobs(svc: Services, limit: int = 10_000) -> int:
    """End as expired up to ``limit`` jobs past their deadline that no worker started (or whose
    worker died: running longer than ``stuck_job_seconds``); returns how many.

    A worker expires the jobs it pops; this finds the ones whose rows Redis lost, before
    :func:`requeue_stuck_jobs` would queue them again.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=svc.settings.stuck_job_seconds)
    with svc.engine.connect() as conn:
        overdue = (
            conn.execute(
                select(Job.id)
                .where(
                    Job.deadline < now,
                    or_(
                        Job.status == JobStatus.QUEUED,
                        (Job.status == JobStatus.RUNNING) & (Job.started_at < cutoff),
                    ),
                )
                .limit(limit)
            )
            .scalars()
            .all()
        )
    if not overdue:
        return 0
    ended = end_unrun(svc, JobStatus.EXPIRED, overdue, stale_running_before=cutoff)
    if ended:
        log.warning("sweeper expired %d jobs past their deadline", len(ended))
    return len(ended)


def requeue_stuck_jobs(svc: Services, limit: int = 1000) -> int:
    """Re-queue up to ``limit`` jobs older than ``stuck_job_seconds``; returns how many.

    Run after :func:`expire_overdue_jobs`: a job past its deadline is not queued again."""
    now = utcnow()
    cutoff = now - timedelta(seconds=svc.settings.stuck_job_seconds)
    with svc.engine.connect() as conn:
        stuck = conn.execute(
            select(
                Job.id,
                Job.model_name,
                Job.model_version,
                Job.inputs,
                Job.n_rows,
                Job.created_at,
                Job.owner_key_id,
                Job.explain,
                Job.priority,
                Job.deadline,
                Job.callback_url,
            )
            .where(
                or_(
                    (Job.status == JobStatus.QUEUED) & (Job.created_at < cutoff),
                    (Job.status == JobStatus.RUNNING) & (Job.started_at < cutoff),
                ),
                or_(Job.deadline.is_(None), Job.deadline >= now),
            )
            .order_by(Job.created_at)
            .limit(limit)
        ).all()
    for job in stuck:
        item = encode_item(
            str(job.id),
            job.inputs,
            n_rows=job.n_rows,
            created_at=job.created_at.isoformat(),
            owner=job.owner_key_id,
            explain=job.explain,
            priority=job.priority,
            deadline=job.deadline,
            callback_url=job.callback_url,
        )
        explained = job.explain is not None
        enqueue(svc, job.model_name, job.model_version, item, explained=explained, priority=job.priority)
    if stuck:
        log.warning("sweeper re-queued %d stuck jobs", len(stuck))
    return len(stuck)


def fail_stale_training_runs(svc: Services) -> int:
    """Mark failed the training runs queued or running longer than ``training_lock_seconds``.

    A worker killed mid-training leaves its run ``running``, and a redelivered message will
    not train it again (a run id trains once); a message lost with Redis leaves it
    ``queued``. Either way nothing will finish it, so it ends here with the reason.
    """
    cutoff = utcnow() - timedelta(seconds=svc.settings.training_lock_seconds)
    with svc.engine.begin() as conn:
        failed = conn.execute(
            update(TrainingRun)
            .where(TrainingRun.status.in_(("queued", "running")), TrainingRun.started_at < cutoff)
            .values(
                status="failed",
                reason="no result within TRAINING_LOCK_SECONDS: the worker died or the message was lost",
                completed_at=utcnow(),
            )
        ).rowcount
    if failed:
        log.warning("sweeper marked %d stale training runs failed", failed)
    return failed
