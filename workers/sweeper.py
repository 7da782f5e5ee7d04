"""Put back on their queues the jobs that have waited too long.

Redis is the fast path, not the record: if it lost a queue (restart without persistence)
or a worker died holding a batch, the jobs are still ``queued``/``running`` in the
database. Re-queueing is safe because result writes are idempotent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select

from app.celery_app import RUN_BATCH
from app.db import Job, utcnow
from app.jobs import enqueue
from app.rqueue import encode_item, queued_versions
from app.services import Services

log = logging.getLogger(__name__)


def wake_workers(svc: Services) -> int:
    """Send a batch task for every non-empty row queue; returns how many were sent.

    The API sends one only when its push finds the queue empty. If that task message was
    lost (broker restart, a worker killed at the wrong moment), later pushes find the
    queue non-empty and send none, so without this the queue would never drain.
    """
    versions = queued_versions(svc.redis)
    for name, version in versions:
        svc.celery.send_task(RUN_BATCH, args=[name, version])
    return len(versions)


def requeue_stuck_jobs(svc: Services, limit: int = 1000) -> int:
    """Re-queue up to ``limit`` jobs older than ``stuck_job_seconds``; returns how many."""
    cutoff = utcnow() - timedelta(seconds=svc.settings.stuck_job_seconds)
    with svc.engine.connect() as conn:
        stuck = conn.execute(
            select(
                Job.id,
                Job.model_name,
                Job.model_version,
                Job.inputs,
                Job.n_rows,
                Job.created_at,
            )
            .where(
                or_(
                    (Job.status == "queued") & (Job.created_at < cutoff),
                    (Job.status == "running") & (Job.started_at < cutoff),
                )
            )
            .order_by(Job.created_at)
            .limit(limit)
        ).all()
    for job in stuck:
        item = encode_item(str(job.id), job.inputs, job.n_rows, job.created_at.isoformat())
        enqueue(svc, job.model_name, job.model_version, item)
    if stuck:
        log.warning("sweeper re-queued %d stuck jobs", len(stuck))
    return len(stuck)
