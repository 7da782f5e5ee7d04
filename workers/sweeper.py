"""Beat's housekeeping: expire jobs past their deadline, re-queue jobs that waited too long
and whose rows are on no queue (retention, deleting what is past it, is workers/retention.py).

Redis is the fast path, not the record: if it lost a queue (restart without persistence)
or a worker died holding a batch, the jobs are still ``queued``/``running`` in the
database. Re-queueing is safe because result writes are idempotent.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, and_, or_, select, tuple_, update

from app.db import Job, TrainingRun, utcnow
from app.db.ids import by_ids
from app.predictions.ending import end_unrun
from app.predictions.items import encode_item
from app.predictions.queue import LUA, enqueue, queue_keys, queued_versions, wake_worker
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
    """Re-queue up to ``limit`` jobs queued or running longer than ``stuck_job_seconds`` whose
    item is on none of their version's queues (Redis lost it, a worker died holding it);
    returns how many.

    A job whose item still waits (a low one behind steady high traffic, or one this sweeper
    queued again already) is left where it is: queued again each sweep, it gained a copy
    every time, each run once the queue drained. Run after :func:`expire_overdue_jobs`: a
    job past its deadline is not queued again.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=svc.settings.stuck_job_seconds)
    lost = _lost_jobs(svc, _stuck(now, cutoff), limit)
    if not lost:
        return 0
    # Read again with the same test: a job a worker claimed meanwhile (popped before the
    # queues were read) is running since just now, so not queued a second time.
    with svc.engine.connect() as conn:
        stuck = conn.execute(
            select(*_REQUEUED).where(by_ids(Job, lost), _stuck(now, cutoff)).order_by(Job.created_at)
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


#: What a job queued again needs.
_REQUEUED = (
    Job.id, Job.model_name, Job.model_version, Job.inputs, Job.n_rows, Job.created_at, Job.owner_key_id,
    Job.explain, Job.priority, Job.deadline, Job.callback_url,
)  # fmt: skip


def _stuck(now: datetime, cutoff: datetime) -> ColumnElement[bool]:
    """Queued or running since before ``cutoff``, and not past its deadline at ``now``."""
    return and_(
        or_(
            (Job.status == JobStatus.QUEUED) & (Job.created_at < cutoff),
            (Job.status == JobStatus.RUNNING) & (Job.started_at < cutoff),
        ),
        or_(Job.deadline.is_(None), Job.deadline >= now),
    )


def _lost_jobs(svc: Services, stuck: ColumnElement[bool], limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` ids of ``stuck`` jobs, oldest first, whose items wait on none of their
    version's queues. Candidates are read in pages (ids only, not inputs) until ``limit`` are
    found, so however many jobs still wait, a lost job behind them is found all the same."""
    waiting: dict[tuple[str, int, bool], set[str]] = {}
    lost: list[uuid.UUID] = []
    after: tuple[datetime, uuid.UUID] | None = None
    while len(lost) < limit:
        query = select(Job.id, Job.created_at, Job.model_name, Job.model_version, Job.explain).where(stuck)
        if after is not None:
            query = query.where(tuple_(Job.created_at, Job.id) > tuple_(*after))
        with svc.engine.connect() as conn:
            page = conn.execute(query.order_by(Job.created_at, Job.id).limit(limit)).all()
        for job in page:
            version = (job.model_name, job.model_version, job.explain is not None)
            if version not in waiting:  # each version's queues are read once per sweep
                waiting[version] = waiting_job_ids(svc.redis, *version)
            if str(job.id) not in waiting[version]:
                lost.append(job.id)
        if len(page) < limit:
            break
        after = (page[-1].created_at, page[-1].id)
    return lost[:limit]


# What it does: the top of its file (app/predictions/lua/). Built once per process.
_QUEUED_IDS = Script(None, (LUA / "queued_ids.lua").read_bytes())  # type: ignore[arg-type]  # a client comes per call
#: Items one call reads: each call is short, so pushes and pops go on between them.
QUEUED_IDS_PAGE = 1000


def waiting_job_ids(redis: Redis, name: str, version: int, explained: bool = False) -> set[str]:
    """The ids of the jobs whose items wait on the version's queues (``explained``: its
    explained rows'). Empty when Redis does not answer: every stuck job may then be lost, and
    is queued again (as before this check)."""
    found: set[str] = set()
    try:
        for key in queue_keys(name, version, explained):
            first = 1
            while True:
                ids = _QUEUED_IDS(keys=[key], args=[first, QUEUED_IDS_PAGE], client=redis)
                found.update(job_id.decode() for job_id in ids)
                if len(ids) < QUEUED_IDS_PAGE:
                    break
                first += QUEUED_IDS_PAGE
    except RedisError as exc:
        log.warning("could not read %s v%s's queues; its stuck jobs are queued again: %s", name, version, exc)
        return set()
    return found


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
