"""Retention: rows past their table's retention deleted by the sweeper, the oldest first.

Each table is cleared in batches of ``RETENTION_BATCH_ROWS``, each batch its own short
transaction (never one long one that holds locks and bloats the table at once), one after
another until a batch finds fewer rows than it may delete or the sweep's time budget
(RETENTION_BUDGET_SECONDS) has passed; what is left waits for the next sweep. So retention
deletes as fast as the database can, not 10,000 rows per sweep: at the default 30 s sweep
that bound was ~333 jobs/s, below a busy day's write rate (README, Retention).

Every batch is a range scan of an index on time, oldest first: jobs by ``created_at`` (a
job finished before the cutoff was created before it), feedback and shadow outputs by
their own ``created_at``, webhook deliveries too (delivered or failed ones: a pending one is
still being retried), Idempotency-Keys by their job's, once that job is gone or due to go.
Queued and running jobs are never deleted, however old, nor their keys; keys go before
their jobs, and a job whose key is still stored waits, so a key never names a job that is gone.

On PostgreSQL ``jobs`` and ``batches`` are partitioned by day: whole days go by DROP
(workers/partitions.py), and only the partitions that are not days (the default, the legacy
one: app/db/partitions.py) are cleared here, row by row in batches. SQLite's plain tables
are cleared here whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, TableClause, column, delete, exists, or_, select
from sqlalchemy import table as sql_table
from sqlalchemy.engine import Engine

from app.db import Batch, Feedback, IdempotencyKey, Job, ShadowOutput, WebhookDelivery, utcnow
from app.db.partitions import undivided
from app.predictions.view import FINISHED
from app.services import Services

#: The tables kept by their rows' own age (created_at).
Aged = type[Feedback] | type[ShadowOutput]

#: Rows one batch deletes: small enough for a short transaction, large enough that the
#: statements' own cost is spread thin.
RETENTION_BATCH_ROWS = 5_000


def in_batches(engine: Engine, delete_some: Callable[[Connection], int], deadline: float) -> int:
    """Run ``delete_some`` (one batch; returns how many rows it deleted) in a transaction of
    its own, again and again, until a batch is not full or ``deadline`` (monotonic) passes."""
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = delete_some(conn)
        total += deleted
        if deleted < RETENTION_BATCH_ROWS or time.monotonic() >= deadline:
            return total


def _undivided(engine: Engine, name: str, *columns: str) -> list[TableClause]:
    with engine.connect() as conn:
        return [
            sql_table(part, *(column(c) for c in ("id", "created_at", *columns)))
            for part in undivided(conn, name)
        ]


def expire_jobs(engine: Engine, cutoff: datetime, deadline: float) -> int:
    """Finished jobs completed before ``cutoff`` (and, on SQLite, the batches that answered them)."""
    if engine.dialect.name != "postgresql":
        return _expire_jobs_and_batches(engine, cutoff, deadline)
    total = 0
    for part in _undivided(engine, "jobs", "status", "completed_at"):
        oldest = (
            select(part.c.id)
            .where(part.c.created_at < cutoff, part.c.status.in_(FINISHED), part.c.completed_at < cutoff)
            .where(~_keyed(part))
            .order_by(part.c.created_at)
            .limit(RETENTION_BATCH_ROWS)
            .scalar_subquery()
        )
        total += _delete_in_batches(engine, delete(part).where(part.c.id.in_(oldest)), deadline)
    return total


def _expire_jobs_and_batches(engine: Engine, cutoff: datetime, deadline: float) -> int:
    oldest = (
        select(Job.id)
        .where(Job.created_at < cutoff, Job.status.in_(FINISHED), Job.completed_at < cutoff)
        .where(~_keyed(Job.__table__))
        .order_by(Job.created_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )

    def delete_some(conn: Connection) -> int:
        gone = conn.execute(delete(Job).where(Job.id.in_(oldest)).returning(Job.batch_id)).scalars().all()
        batch_ids = {batch_id for batch_id in gone if batch_id is not None}
        if batch_ids:
            # A batch answers several jobs: it goes with the last of them.
            conn.execute(
                delete(Batch).where(Batch.id.in_(batch_ids), ~exists().where(Job.batch_id == Batch.id))
            )
        return len(gone)

    return in_batches(engine, delete_some, deadline)


def expire_idle_batches(engine: Engine, cutoff: datetime, deadline: float) -> int:
    """Batches completed before ``cutoff`` that no job refers to (a shadow's, or one whose
    jobs another batch answered): the rest went with their jobs (:func:`expire_jobs`).

    PostgreSQL: batches are kept by their own time, as jobs are (no foreign key ties them):
    those of the partitions that are not days, created before ``cutoff``."""
    if engine.dialect.name == "postgresql":
        total = 0
        for part in _undivided(engine, "batches"):
            oldest_rows = (
                select(part.c.id)
                .where(part.c.created_at < cutoff)
                .order_by(part.c.created_at)
                .limit(RETENTION_BATCH_ROWS)
                .scalar_subquery()
            )
            total += _delete_in_batches(engine, delete(part).where(part.c.id.in_(oldest_rows)), deadline)
        return total
    oldest = (
        select(Batch.id)
        .where(Batch.completed_at < cutoff, ~exists().where(Job.batch_id == Batch.id))
        .order_by(Batch.completed_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )
    return in_batches(
        engine, lambda conn: conn.execute(delete(Batch).where(Batch.id.in_(oldest))).rowcount, deadline
    )


def expire_by_age(engine: Engine, aged: Aged, cutoff: datetime, deadline: float) -> int:
    """Rows of ``aged`` (feedback, shadow outputs) created before ``cutoff``."""
    oldest = (
        select(aged.id)
        .where(aged.created_at < cutoff)
        .order_by(aged.created_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )
    return in_batches(
        engine, lambda conn: conn.execute(delete(aged).where(aged.id.in_(oldest))).rowcount, deadline
    )


def expire_keys(engine: Engine, cutoff: datetime, deadline: float) -> int:
    """Idempotency-Keys created before ``cutoff`` whose job is gone or finished before
    ``cutoff`` (due to go itself): a key of a job still queued or running, however old, is kept,
    else a retry would make a second job."""
    oldest = (
        select(IdempotencyKey.key)
        .where(IdempotencyKey.created_at < cutoff, ~_kept_job(cutoff))
        .order_by(IdempotencyKey.created_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )
    statement = delete(IdempotencyKey).where(IdempotencyKey.key.in_(oldest))
    return in_batches(engine, lambda conn: conn.execute(statement).rowcount, deadline)


def _kept_job(cutoff: datetime) -> Any:
    """The key's job exists and must stay: unfinished, or finished at or after ``cutoff``."""
    return exists().where(
        Job.id == IdempotencyKey.job_id,
        Job.created_at == IdempotencyKey.created_at,
        or_(Job.status.not_in(FINISHED), Job.completed_at.is_(None), Job.completed_at >= cutoff),
    )


def _keyed(job: Any) -> Any:
    """``job`` (a row of jobs or of one of its partitions) still has an Idempotency-Key: it
    waits for the key to go first (a sweep whose budget ran out during keys leaves both)."""
    return exists().where(IdempotencyKey.job_id == job.c.id, IdempotencyKey.created_at == job.c.created_at)


def expire_deliveries(engine: Engine, cutoff: datetime, deadline: float) -> int:
    """Webhook deliveries created before ``cutoff`` that were delivered or failed; a pending
    one (still being retried) is never deleted."""
    oldest = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.created_at < cutoff, WebhookDelivery.state != "pending")
        .order_by(WebhookDelivery.created_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )
    statement = delete(WebhookDelivery).where(WebhookDelivery.id.in_(oldest))
    return in_batches(engine, lambda conn: conn.execute(statement).rowcount, deadline)


def expire_all(svc: Services) -> dict[str, int]:
    """Every table with a retention, within one budget (jobs, and their keys, first: they grow
    fastest). A retention of 0 keeps that table's rows for ever."""
    settings = svc.settings
    deadline = time.monotonic() + settings.retention_budget_seconds
    now = utcnow()
    done: dict[str, int] = {}
    for name, seconds, expire in (
        # Keys first: a day of jobs is dropped only once no key older than its end is left.
        ("idempotency_keys", settings.job_retention_seconds, expire_keys),
        ("jobs", settings.job_retention_seconds, expire_jobs),
        ("batches", settings.job_retention_seconds, expire_idle_batches),
        ("feedback", settings.feedback_retention_seconds, _table(Feedback)),
        ("shadow_outputs", settings.shadow_output_retention_seconds, _table(ShadowOutput)),
        ("webhook_deliveries", settings.webhook_retention_seconds, expire_deliveries),
    ):
        done[name] = expire(svc.engine, now - timedelta(seconds=seconds), deadline) if seconds > 0 else 0
    return done


def _table(table: Aged) -> Callable[[Engine, datetime, float], int]:
    return lambda engine, cutoff, deadline: expire_by_age(engine, table, cutoff, deadline)


def _delete_in_batches(engine: Engine, statement: Any, deadline: float) -> int:
    """``statement`` (a DELETE of at most a batch of rows), batch after batch."""
    return in_batches(engine, lambda conn: int(conn.execute(statement).rowcount), deadline)
