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
still being retried). Queued and running jobs are never deleted, however old.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, exists, select
from sqlalchemy.engine import Engine

from app.db import Batch, Feedback, Job, ShadowOutput, WebhookDelivery, utcnow
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


def expire_jobs(engine: Engine, cutoff: datetime, deadline: float) -> int:
    """Finished jobs completed before ``cutoff``, and the batches that answered them."""
    oldest = (
        select(Job.id)
        .where(Job.created_at < cutoff, Job.status.in_(FINISHED), Job.completed_at < cutoff)
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
    jobs another batch answered): the rest went with their jobs (:func:`expire_jobs`)."""
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


def expire_by_age(
    engine: Engine, table: type[Feedback] | type[ShadowOutput], cutoff: datetime, deadline: float
) -> int:
    """Rows of ``table`` (feedback, shadow outputs) created before ``cutoff``."""
    oldest = (
        select(table.id)
        .where(table.created_at < cutoff)
        .order_by(table.created_at)
        .limit(RETENTION_BATCH_ROWS)
        .scalar_subquery()
    )
    return in_batches(
        engine, lambda conn: conn.execute(delete(table).where(table.id.in_(oldest))).rowcount, deadline
    )


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
    """Every table with a retention, within one budget (jobs first: they grow fastest).
    A retention of 0 keeps that table's rows for ever."""
    settings = svc.settings
    deadline = time.monotonic() + settings.retention_budget_seconds
    now = utcnow()
    done: dict[str, int] = {}
    for name, seconds, expire in (
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


def _delete_oldest(engine: Engine, table: Aged | type[Batch], oldest: Any, deadline: float) -> int:
    """The rows whose ids ``oldest`` (a subquery of at most a batch) selects, batch after batch."""
    statement = delete(table).where(table.id.in_(oldest))
    return in_batches(engine, lambda conn: conn.execute(statement).rowcount, deadline)
