"""Prediction jobs once submitted (app/submit.py takes them in): queueing their rows for
a worker, reading them back, long-polls, and shadow comparisons.

A job belongs to the API key that submitted it: only that key or an admin key reads it
(others get the 404 an unknown id gets, so ids do not leak). With auth off jobs have no
owner and every caller reads every job.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import select

from app import logs
from app.celery_app import batch_task
from app.db import Job, ShadowOutput
from app.errors import JobNotFound
from app.job_view import FINISHED, JobStatus, job_view
from app.queue_items import decode_view
from app.rqueue import RowQueue, done_key, result_key
from app.services import Services

if TYPE_CHECKING:
    from app.auth import Principal

log = logging.getLogger(__name__)


def enqueue(svc: Services, name: str, version: int, item: bytes, *, explained: bool = False) -> None:
    """Push rows and wake a worker when none holds the queue (no Celery message per request).

    ``explained``: the item asks for explanations, and goes to the version's explained rows.
    """
    try:
        woke = RowQueue(svc.redis, name, version, explained).push(item)
    except RedisError as exc:
        # The job is committed; the sweeper re-queues it from the database.
        log.warning("could not queue job rows for %s v%s: %s", name, version, exc)
        return
    if woke:
        wake_worker(svc, name, version, explained=explained)


def wake_worker(svc: Services, name: str, version: int, *, explained: bool = False) -> None:
    try:
        svc.celery.send_task(batch_task(explained), args=[name, version])
    except BrokerError as exc:
        # The rows are queued; the sweeper wakes a worker for every non-empty queue.
        log.warning("could not wake a worker for %s v%s: %s", name, version, exc)


def get(svc: Services, job_id: str, wait: float = 0.0, reader: Principal | None = None) -> dict[str, Any]:
    """A job's public view; with ``wait`` > 0, hold until it finishes or ``wait`` passes.

    ``reader`` is the calling API key (None with auth off): a job it may not read is not found.
    """
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id) from None
    logs.bind(job_id=str(parsed))
    view = read(svc, parsed, reader)
    if wait > 0 and view["status"] not in FINISHED:
        view = wait_for(svc, view["id"], wait) or read(svc, parsed, reader)
    return view


def may_read(reader: Principal | None, owner: int | None) -> bool:
    """Whether ``reader`` may see a job ``owner`` submitted: with auth off (no reader) and
    for admin keys every job, for other keys only their own."""
    return reader is None or reader.key_id == owner or reader.allows("admin")


def wait_for(svc: Services, job_id: str, seconds: float) -> dict[str, Any] | None:
    """The finished job's view once a worker hands it over, or None after ``seconds``.

    The worker pushes the view onto a short-lived list; BLMOVE from that list to itself
    returns it and leaves it there, so every client waiting on the job gets it.
    """
    key = done_key(job_id)
    try:
        raw = svc.redis_wait.blmove(key, key, seconds, "LEFT", "RIGHT")
    except RedisError as exc:
        log.warning("long-poll for %s fell back to one read: %s", job_id, exc)
        return None
    return decode_view(raw)[1] if raw is not None else None


def read(svc: Services, job_id: uuid.UUID, reader: Principal | None) -> dict[str, Any]:
    """The job's view from Redis, else the database; JobNotFound when ``reader`` may not read it."""
    found: tuple[int | None, dict[str, Any]] | None = None
    try:
        raw = svc.redis.get(result_key(str(job_id)))
        if raw is not None:
            found = decode_view(raw)
    except RedisError:
        pass
    if found is None:
        with svc.engine.connect() as conn:
            row = conn.execute(select(Job.__table__).where(Job.id == job_id)).mappings().first()
        if row is not None:
            found = row["owner_key_id"], job_view(row)
    if found is None or not may_read(reader, found[0]):
        # The same answer for another key's job as for no job: ids do not leak.
        raise JobNotFound(f"no job with id {str(job_id)!r}", id=str(job_id))
    return found[1]


def shadow_comparisons(svc: Services, name: str, limit: int = 50) -> dict[str, Any]:
    """The newest shadow outputs of a model beside what served the same jobs, and how often they agree."""
    svc.registry.require(name)
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(ShadowOutput.job_id, ShadowOutput.model_version, ShadowOutput.outputs,
                   Job.model_version.label("served_version"), Job.outputs.label("served_outputs"))
            .join(Job, Job.id == ShadowOutput.job_id)
            .where(ShadowOutput.model_name == name, Job.status == JobStatus.SUCCEEDED)
            .order_by(ShadowOutput.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
    pairs, agreeing, compared = [], 0, 0
    for row in rows:
        for served, shadow in zip(row.served_outputs, row.outputs, strict=True):
            compared += 1
            agreeing += served["prediction"] == shadow["prediction"]
        pairs.append(
            {
                "job_id": str(row.job_id),
                "served": {"version": row.served_version, "outputs": row.served_outputs},
                "shadow": {"version": row.model_version, "outputs": row.outputs},
            }
        )
    agreement = agreeing / compared if compared else None
    return {"model": name, "rows_compared": compared, "prediction_agreement": agreement, "jobs": pairs}
