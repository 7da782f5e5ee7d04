"""The deferred road: a submit that waits is queued before it has a row (see app/predictions/submit.py)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from app import logs
from app.db.ids import new_id
from app.metrics import CACHE_MISSES
from app.predictions import cache
from app.predictions.items import encode_item
from app.predictions.jobs import read, wait_for
from app.predictions.queue import RowQueue, wake_worker
from app.predictions.submission import (
    Peek,
    Submission,
    insert_if_absent,
    job_record,
    overloaded,
)
from app.predictions.view import job_view
from app.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deferred:
    """How the deferred road ended: the job's ``view``, or (a row was cached, or Redis
    failed) a ``peek`` for the stored road to go on from; one of the two is set."""

    view: dict[str, Any] | None = None
    peek: Peek | None = None


def submit_deferred(svc: Services, sub: Submission) -> Deferred:
    """The deferred road: queue a waiting job before it has a row, and wait for it.

    The stored road takes the job when a row is cached (it answers from the outputs the
    Peek carries) or Redis fails (it accepts the job all the same; the sweeper queues it).
    """
    name, version, rows = sub.name, sub.version, sub.rows
    made, created_at = new_id()  # a UUIDv7: its time is the row's created_at (app/db/ids.py)
    job_id = str(made)
    deadline = sub.deadline(created_at)
    item = encode_item(
        job_id,
        rows,
        n_rows=len(rows),
        created_at=created_at.isoformat(),
        request_id=sub.request_id,
        deferred=True,
        owner=sub.owner,
        priority=sub.priority,
        deadline=deadline,
    )
    try:
        queue = RowQueue(svc.redis, name, version, priority=sub.priority)
        admission = cache.admit(svc, queue, item, sub.keys, svc.settings.max_queued_jobs, sub.rate)
    except RedisError as exc:
        # As _peek does when Redis fails: compute every row, queue depth unknown.
        log.warning("could not queue job rows for %s v%s, storing the job first: %s", name, version, exc)
        return Deferred(peek=Peek([None] * len(rows), 0))
    if admission.outcome == "cached":
        cached = cache.cached_outputs(admission.outputs, sub.classes, len(rows))
        return Deferred(peek=Peek(cached, admission.depth))
    if admission.outcome == "overloaded":
        raise overloaded(name, version, admission.depth)
    if admission.wake:
        wake_worker(svc, name, version)
    logs.bind(job_id=job_id, model=name, version=version)
    CACHE_MISSES.labels(name).inc(len(rows))
    finished = wait_for(svc, job_id, sub.wait)
    if finished is not None:
        return Deferred(view=finished)
    # Not finished in time: store the job before the client hears of it (the 202).
    uncached = [None] * len(rows)
    record = job_record(
        uuid.UUID(job_id), name, version, rows, uncached, created_at=created_at, owner=sub.owner,
        priority=sub.priority, deadline=deadline,
    )  # fmt: skip
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stored = insert_if_absent(conn, [record])
    # Not stored here means the worker stored it meanwhile, finished: answer with that.
    return Deferred(view=job_view(record) if stored else read(svc, uuid.UUID(job_id), None))
