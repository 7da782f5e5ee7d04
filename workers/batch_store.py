"""A batch's writes to the database: claiming its jobs, then the batch, its jobs' results,
its shadows' outputs and the webhook deliveries announcing its jobs' ends in one transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
)

from app.db import INSERT_BY_DIALECT, Batch, Job, ShadowOutput, dialect_insert, utcnow
from app.db.ids import time_of, times_of
from app.predictions.cache import ROWS_PER_KEY
from app.predictions.items import QueuedRows
from app.predictions.view import NEVER_RUN, JobStatus
from app.services import Services
from app.webhooks import outbox
from workers.batch_work import BatchStatus, BatchWork

#: A job in one of these is never claimed or answered again: it was answered (succeeded or
#: failed: a finished job's status never changes, app/predictions/view.py), or it ended
#: without running (expired, cancelled: app/predictions/ending.py).
_DONE_FOR_GOOD = (JobStatus.SUCCEEDED, JobStatus.FAILED, *NEVER_RUN)
# Spelled as plain comparisons, not NOT IN: an expanding IN cannot be executed many times.
_NOT_DONE = and_(*(Job.status != status for status in _DONE_FOR_GOOD))


# Built once: constructing these statements per batch shows up in profiles. Both are
# idempotent: a job that already succeeded (say, re-queued by the sweeper and answered
# by another worker) is neither claimed again nor given a second answer.
# Every statement that writes several job rows takes their locks in job id order (the
# claim through a locking subquery, the others by sorting their rows): two pool processes
# writing overlapping jobs in different orders deadlocked (PostgreSQL's DeadlockDetected)
# when a sweep queued the same stuck jobs twice.
# With ``timed`` each also names the jobs' created_at (their ids' times, app/db/ids.py), so
# PostgreSQL reads only their days' partitions; a batch holding a job stored before UUIDv7
# ids (no time in its id) takes the untimed one, which probes every partition's index.
def _timed(timed: bool, column: Any, param: str) -> Any:
    return column.in_(bindparam(param, expanding=True)) if timed else true()


def _claim_jobs(timed: bool) -> Any:
    days = _timed(timed, Job.created_at, "job_times")
    return (
        update(Job)
        .where(
            Job.id.in_(
                select(Job.id)
                .where(Job.id.in_(bindparam("job_ids", expanding=True)), days, _NOT_DONE)
                .order_by(Job.id)
                .with_for_update()
                .scalar_subquery()
            ),
            days,
        )
        .values(status=JobStatus.RUNNING, started_at=bindparam("started_at"))
        .returning(Job.id)
    )


# The batch's stored jobs, locked (in id order, as above) until its transaction ends: those
# already done for good (answered by another worker, expired by the sweeper meanwhile) are
# left as they are, and neither announced nor published by this batch.
def _lock_jobs(timed: bool) -> Any:
    return (
        select(Job.id, Job.status)
        .where(Job.id.in_(bindparam("job_ids", expanding=True)), _timed(timed, Job.created_at, "job_times"))
        .order_by(Job.id)
        .with_for_update()
    )


def _finish_job(timed: bool) -> Any:
    day = Job.created_at == bindparam("job_created_at") if timed else true()
    return (
        update(Job)
        .where(Job.id == bindparam("job_id"), day, _NOT_DONE)
        .values(
            status=bindparam("new_status"),
            outputs=bindparam("new_outputs"),
            error=bindparam("new_error"),
            batch_id=bindparam("new_batch_id"),
            completed_at=bindparam("new_completed_at"),
        )
    )


_CLAIM_JOBS = {timed: _claim_jobs(timed) for timed in (True, False)}
_LOCK_JOBS = {timed: _lock_jobs(timed) for timed in (True, False)}
_FINISH_JOB = {timed: _finish_job(timed) for timed in (True, False)}

_INSERT_BATCH = insert(Batch)


#: The columns a finished deferred job's row is inserted with (the others keep their defaults).
_DEFERRED_COLUMNS = (
    "id", "model_name", "model_version", "status", "n_rows", "inputs", "outputs", "error",
    "request_hash", "batch_id", "cached_rows", "owner_key_id", "created_at",
    "priority", "deadline", "started_at", "completed_at",
)  # fmt: skip


def _store_deferred_statement(dialect: str, document: bool = True) -> Any:
    """An INSERT of finished deferred jobs that updates a row not done for good, returning the ids written.

    On PostgreSQL the rows come as one JSON document (``rows``) that json_populate_recordset
    reads as the jobs table's own row type: the statement's text is the same whatever the
    batch's size. Given a list of rows with RETURNING, SQLAlchemy writes an INSERT with 17
    placeholders per row afresh for every batch ("insertmanyvalues"), which psycopg then
    parses again (too long for its cache): half of a worker's CPU at 64 clients, where
    this costs a tenth of that (bench/counts.py). A JSON null is stored as SQLAlchemy's JSON
    columns store None (JSON null, not SQL NULL), as on every other road.
    """
    statement = INSERT_BY_DIALECT[dialect](Job)
    if dialect == "postgresql" and document:
        rows = func.json_populate_recordset(
            literal_column(f"NULL::{Job.__tablename__}"), bindparam("rows", type_=JSON)
        ).table_valued(*_DEFERRED_COLUMNS)
        json_null: ColumnElement[Any] = literal_column("'null'::json")
        columns = [func.coalesce(rows.c[name], json_null) if name in ("outputs", "error") else rows.c[name]
                   for name in _DEFERRED_COLUMNS]  # fmt: skip
        # In job id order, as the rows are sorted: the lock order (see _CLAIM_JOBS).
        statement = statement.from_select(_DEFERRED_COLUMNS, select(*columns).order_by(rows.c.id))
    result_columns = ("status", "outputs", "error", "batch_id", "started_at", "completed_at")
    return statement.on_conflict_do_update(
        # PostgreSQL's key includes the partition key; SQLite's plain table is keyed by id.
        index_elements=[Job.id, Job.created_at] if dialect == "postgresql" else [Job.id],
        set_={column: statement.excluded[column] for column in result_columns},
        where=_NOT_DONE,
    ).returning(Job.id)


_STORE_DEFERRED = {dialect: _store_deferred_statement(dialect) for dialect in INSERT_BY_DIALECT}
# One job of many rows (a 1,000-row request) alone in its batch: a plain INSERT of its one row,
# which PostgreSQL took in half the time of reading it out of a JSON document (README, Benchmark).
_STORE_ONE_LARGE_JOB = _store_deferred_statement("postgresql", document=False)


def store(
    svc: Services,
    work: BatchWork,
    results: list[dict[str, Any]],
    *,
    status: BatchStatus,
    worker: str,
    completed_at: datetime,
) -> int:
    """The batch, its shadows' outputs, its jobs' results and the outbox rows announcing them
    (app/webhooks/outbox.py), in one transaction; returns how many outbox rows it wrote."""
    shadow_outputs = [(item, out) for item, out in zip(work.shadows, work.shadow_outcomes, strict=True)
                      if not isinstance(out, Exception)]  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(
            _INSERT_BATCH,
            {
                "id": work.id,
                "model_name": work.name,
                "model_version": work.version,
                "n_rows": len(work.rows) + len(work.shadow_rows),
                "n_jobs": len(work.items) + len(work.shadows),
                "worker": worker,
                "status": status,
                "inference_seconds": work.inference_seconds,
                "started_at": work.started_at,
                "completed_at": completed_at,
                "created_at": work.started_at,  # the time its id names (workers/batching.py)
            },
        )
        if shadow_outputs:
            store_shadow_outputs(conn, work, shadow_outputs)
        finished = [r for item, r in zip(work.items, results, strict=True) if not item.deferred]
        if finished:
            work.not_written |= finish_jobs(conn, finished, work.id, completed_at)
        deferred = [(item, r) for item, r in zip(work.items, results, strict=True) if item.deferred]
        if deferred:
            written = store_deferred_jobs(conn, work, deferred, completed_at)
            work.not_written |= {item.job_id for item, _ in deferred} - written
        announced = outbox.job_deliveries(
            [outbox.JobEnd(r["id"], r["status"], item.owner, item.callback_url)
             for item, r in zip(work.items, results, strict=True) if item.job_id not in work.not_written],
            svc.webhook_endpoints,
            completed_at,
        )  # fmt: skip
        outbox.write(conn, announced)
    return len(announced)


def finish_jobs(
    conn: Connection, results: list[dict[str, Any]], batch_id: uuid.UUID | None, completed_at: Any
) -> set[str]:
    """Write stored jobs' results, in job id order (see _CLAIM_JOBS); returns the ids of those
    left as they were because they were already done for good (see _LOCK_JOBS)."""
    ids = [uuid.UUID(r["id"]) for r in results]
    times = times_of(ids)
    timed = {"job_times": sorted(set(times))} if times is not None else {}
    locked = conn.execute(_LOCK_JOBS[times is not None], {"job_ids": ids, **timed})
    done = {str(job_id) for job_id, status in locked if status in _DONE_FOR_GOOD}
    writes = [
        {
            "job_id": uuid.UUID(r["id"]),
            "new_status": r["status"],
            "new_outputs": r["outputs"],
            "new_error": r["error"],
            "new_batch_id": batch_id,
            "new_completed_at": completed_at,
        }
        for r in sorted(results, key=lambda r: uuid.UUID(r["id"]))
        if r["id"] not in done
    ]
    if writes and times is not None:
        writes = [write | {"job_created_at": time_of(write["job_id"])} for write in writes]
    if writes:
        conn.execute(_FINISH_JOB[times is not None], writes)
    return done


def store_deferred_jobs(
    conn: Connection,
    work: BatchWork,
    finished: list[tuple[QueuedRows, dict[str, Any]]],
    completed_at: datetime,
) -> set[str]:
    """Insert the rows of finished deferred jobs, outputs and all; returns the ids written.

    The API may have inserted one as queued meanwhile (its client's wait ran out), and the
    sweeper may have queued that row again: the existing row takes the result unless it
    already succeeded or ended unrun (cancelled, expired), so a job is never answered twice
    differently.
    """
    # A deferred item carries all of its job's rows: it is queued only when none was cached.
    records = [
        {"id": uuid.UUID(item.job_id), "model_name": work.name, "model_version": work.version,
         "status": r["status"], "n_rows": item.n_rows, "inputs": item.rows, "outputs": r["outputs"],
         "error": r["error"], "request_hash": None, "batch_id": work.id,
         "cached_rows": 0, "owner_key_id": item.owner, "created_at": datetime.fromisoformat(item.created_at),
         "priority": item.priority,
         "deadline": datetime.fromisoformat(item.deadline) if item.deadline else None,
         "started_at": work.started_at, "completed_at": completed_at}
        for item, r in finished
    ]  # fmt: skip
    records.sort(key=lambda record: record["id"])  # lock order: see _CLAIM_JOBS
    dialect = conn.dialect.name
    if dialect == "postgresql" and len(records) == 1 and records[0]["n_rows"] > ROWS_PER_KEY:
        written = conn.execute(_STORE_ONE_LARGE_JOB, records)
    else:
        written = conn.execute(
            _STORE_DEFERRED[dialect], {"rows": records} if dialect == "postgresql" else records
        )
    return {str(job_id) for job_id in written.scalars()}


def store_shadow_outputs(
    conn: Connection, work: BatchWork, shadows: list[tuple[QueuedRows, list[Any]]]
) -> None:
    """Store what the shadow version answered (each item with its outputs), once per job and
    version (a re-queue adds nothing)."""
    records = [
        {"job_id": uuid.UUID(item.job_id), "model_name": work.name, "model_version": work.version,
         "outputs": outputs, "batch_id": work.id, "created_at": utcnow()}
        for item, outputs in shadows
    ]  # fmt: skip
    conn.execute(dialect_insert(conn)(ShadowOutput).on_conflict_do_nothing(), records)


def claim(svc: Services, job_ids: list[str], started_at: Any) -> set[str]:
    """Mark the jobs running; returns those not already done for good (only those are computed)."""
    ids = [uuid.UUID(j) for j in job_ids]
    times = times_of(ids)
    timed = {"job_times": sorted(set(times))} if times is not None else {}
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            _CLAIM_JOBS[times is not None], {"job_ids": ids, "started_at": started_at, **timed}
        ).scalars()
        return {str(j) for j in claimed}
