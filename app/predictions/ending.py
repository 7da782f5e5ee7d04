"""Jobs that end without running: ``expired`` (not started before their deadline) and
``cancelled`` (a client's cancel while queued). Both are done: they carry an ``error`` with
their code (``deadline_exceeded``, ``cancelled``), so a client that knows only ``failed``
can read why, and they are never run.

:func:`end_unrun` is the one place a job becomes expired or cancelled, whoever finds it: the
cancel route (:func:`cancel`), a worker's pop and its claim (workers/batching.py), the
sweeper (workers/sweeper.py). Durable first: the row changes in the database (only from
``queued``, so a job that started or finished is left as it was: never answered twice),
then Redis learns of it (a cancel mark the pop script honours, the view for pollers). An
expired job's ``prediction.expired`` webhook is written in the same transaction as its row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from sqlalchemy import select, update

from app.access.auth import may_read
from app.db import Job, dialect_insert, utcnow
from app.db.ids import by_id, by_ids
from app.errors import JobNotCancellable, JobNotFound
from app.metrics import JOBS
from app.predictions import cache as output_cache
from app.predictions.items import QueuedRows, encode_view
from app.predictions.queue import CANCEL_PREFIX
from app.predictions.view import JobStatus, job_view
from app.services import Services
from app.webhooks import outbox

if TYPE_CHECKING:
    from app.access.auth import Principal

log = logging.getLogger(__name__)

#: How long a cancel mark stays in Redis. The mark only spares a worker the claim: the row
#: says cancelled, and a worker claims only unfinished rows.
CANCEL_MARK_SECONDS = 86_400

ERRORS = {
    JobStatus.EXPIRED: ("deadline_exceeded", "the job was not started before its deadline; it was never run"),
    JobStatus.CANCELLED: ("cancelled", "the job was cancelled before it started; it was never run"),
}

#: What an ended job's view needs (not its inputs, which may be large).
_VIEW_COLUMNS = [Job.__table__.c[name] for name in (
    "id", "model_name", "model_version", "status", "outputs", "error", "priority", "deadline",
    "created_at", "completed_at", "owner_key_id", "callback_url",
)]  # fmt: skip


def end_unrun(
    svc: Services,
    status: JobStatus,
    job_ids: Sequence[uuid.UUID],
    *,
    model: tuple[str, int] | None = None,
    deferred: Sequence[QueuedRows] = (),
    stale_running_before: datetime | None = None,
) -> list[dict[str, Any]]:
    """End the queued jobs ``job_ids`` as ``status`` (expired or cancelled); returns the views
    of the jobs this call ended, in no order.

    ``deferred`` items (of ``model``: name and version) have no row yet: theirs is inserted,
    ended (unless the API stored it meanwhile: then that row ends if still queued). With
    ``stale_running_before`` (the sweeper's), a job running since before then ends too: its
    worker died, and what it started never finished.
    """
    code, message = ERRORS[status]
    now = utcnow()
    error = {"code": code, "message": message, "details": {}}
    ids = list(job_ids)
    unfinished = Job.status == JobStatus.QUEUED
    if stale_running_before is not None:
        unfinished |= (Job.status == JobStatus.RUNNING) & (Job.started_at < stale_running_before)
    ended: list[Any] = []
    with svc.engine.begin() as conn:
        if deferred:
            assert model is not None, "deferred items need their model"
            records = [_deferred_record(item, model, status, error, now) for item in deferred]
            inserted = dialect_insert(conn)(Job).on_conflict_do_nothing()
            ended += conn.execute(inserted.returning(*_VIEW_COLUMNS), records).mappings().all()
            ids += [record["id"] for record in records if record["id"] not in {row["id"] for row in ended}]
        if ids:
            ended += (
                conn.execute(
                    update(Job)
                    .where(by_ids(Job, sorted(ids)), unfinished)
                    .values(status=status, error=error, completed_at=now)
                    .returning(*_VIEW_COLUMNS)
                )
                .mappings()
                .all()
            )
        # Announced with the end it announces (prediction.expired; app/webhooks/).
        ends = [
            outbox.JobEnd(str(row["id"]), status, row["owner_key_id"], row["callback_url"]) for row in ended
        ]
        announced = outbox.job_deliveries(ends, svc.webhook_endpoints, now)
        outbox.write(conn, announced)
    if announced:
        outbox.wake_sender(svc.celery)
    views = {str(row["id"]): (row["owner_key_id"], job_view(row)) for row in ended}
    _announce(svc, status, views)
    for row in ended:
        JOBS.labels(row["model_name"], str(row["model_version"]), status).inc()
    if views:
        log.info("%d jobs %s without running", len(views), status, extra={"job_ids": sorted(views)})
    return [view for _, view in views.values()]


def _deferred_record(
    item: QueuedRows, model: tuple[str, int], status: str, error: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "id": uuid.UUID(item.job_id), "model_name": model[0], "model_version": model[1], "status": status,
        "n_rows": item.n_rows, "inputs": item.rows, "outputs": None, "error": error, "cached_rows": 0,
        "owner_key_id": item.owner, "priority": item.priority,
        "deadline": datetime.fromisoformat(item.deadline) if item.deadline else None,
        "created_at": datetime.fromisoformat(item.created_at), "completed_at": now,
    }  # fmt: skip


def _announce(svc: Services, status: JobStatus, views: dict[str, tuple[int | None, dict[str, Any]]]) -> None:
    """Redis after the database: cancel marks (the pop drops those jobs' items unread), then
    each view for pollers and waiting long-polls. Best effort: the rows are the record."""
    if not views:
        return
    settings = svc.settings
    try:
        if status == JobStatus.CANCELLED:
            with svc.redis.pipeline(transaction=False) as pipe:
                for job_id in views:
                    pipe.set(CANCEL_PREFIX + job_id, b"1", ex=CANCEL_MARK_SECONDS)
                pipe.execute()
        encoded = {job_id: encode_view(owner, view) for job_id, (owner, view) in views.items()}
        output_cache.publish(svc, {}, encoded, settings.cache_ttl_seconds, settings.result_ttl_seconds)
    except RedisError as exc:
        log.warning("could not hand %d %s jobs to Redis: %s", len(views), status, exc)


def cancel(svc: Services, job_id: str, caller: Principal | None) -> dict[str, Any]:
    """Cancel a queued job; returns its view (status cancelled).

    JobNotFound for an unknown id or another key's job (as a poll); JobNotCancellable (409,
    its status in details) when it is running or done.
    """
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id) from None
    with svc.engine.connect() as conn:
        row = conn.execute(select(Job.owner_key_id, Job.status).where(by_id(Job, parsed))).first()
    if row is None or not may_read(caller, row.owner_key_id):
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id)
    ended = end_unrun(svc, JobStatus.CANCELLED, [parsed]) if row.status == JobStatus.QUEUED else []
    if ended:
        return ended[0]
    with svc.engine.connect() as conn:
        status = conn.execute(select(Job.status).where(by_id(Job, parsed))).scalar_one()
    raise JobNotCancellable(f"job {job_id} is {status}: only a queued job can be cancelled", status=status)
