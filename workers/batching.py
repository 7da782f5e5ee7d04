"""One batch: pop waiting rows of one model version, one model call, write every result.

This is the whole hot path of a worker. ``run_batch`` runs one batch and ``drain`` runs
them back to back until the queue is empty; both take explicit services so tests can
call them directly; the Celery task in ``workers.tasks`` is a thin wrapper.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from app import logs
from app.celery_app import batch_task
from app.db import INSERT_BY_DIALECT, Batch, Job, ShadowOutput, dialect_insert, utcnow
from app.errors import PredqError
from app.explain import ExplanationFailed, explanations
from app.inference import predict_by_job
from app.job_view import FINISHED, JobStatus, job_view
from app.metrics import BATCH_ROWS, INFERENCE, JOB_DURATION, JOBS, QUEUE_WAIT
from app.rqueue import QueuedRows, RowQueue, cache_keys, encode_view, publish_results
from app.services import Services

log = logging.getLogger(__name__)

# Built once: constructing these statements per batch shows up in profiles. Both are
# idempotent: a job that already succeeded (say, re-queued by the sweeper and answered
# by another worker) is neither claimed again nor given a second answer.
# Every statement that writes several job rows takes their locks in job id order (the
# claim through a locking subquery, the others by sorting their rows): two pool processes
# writing overlapping jobs in different orders deadlocked (PostgreSQL's DeadlockDetected)
# when a sweep queued the same stuck jobs twice.
_CLAIM_JOBS = (
    update(Job)
    .where(
        Job.id.in_(
            select(Job.id)
            .where(Job.id.in_(bindparam("job_ids", expanding=True)), Job.status != JobStatus.SUCCEEDED)
            .order_by(Job.id)
            .with_for_update()
            .scalar_subquery()
        )
    )
    .values(status=JobStatus.RUNNING, started_at=bindparam("started_at"))
    .returning(Job.id)
)
_FINISH_JOB = (
    update(Job)
    .where(Job.id == bindparam("job_id"), Job.status != JobStatus.SUCCEEDED)
    .values(
        status=bindparam("new_status"),
        outputs=bindparam("new_outputs"),
        error=bindparam("new_error"),
        batch_id=bindparam("new_batch_id"),
        completed_at=bindparam("new_completed_at"),
    )
)

_INSERT_BATCH = insert(Batch)


def _store_deferred_statement(insert_of_dialect: Any) -> Any:
    statement = insert_of_dialect(Job)
    result_columns = ("status", "outputs", "error", "batch_id", "started_at", "completed_at")
    return statement.on_conflict_do_update(
        index_elements=[Job.id],
        set_={column: statement.excluded[column] for column in result_columns},
        where=Job.status != JobStatus.SUCCEEDED,
    )


# Per dialect, since each spells ON CONFLICT with its own insert().
_STORE_DEFERRED = {name: _store_deferred_statement(of) for name, of in INSERT_BY_DIALECT.items()}


@dataclass
class BatchReport:
    """What one batch did; a task adds its batches up in a DrainReport."""

    model: str
    version: int
    batch_id: str | None
    rows: int
    jobs: int
    status: str
    inference_seconds: float


@dataclass
class DrainReport:
    """What one batch task did: the batches it ran back to back; Flower shows it."""

    model: str
    version: int
    batches: int = 0
    rows: int = 0
    jobs: int = 0
    failed_batches: int = 0
    inference_seconds: float = 0.0
    handed_on: bool = False

    def add(self, batch: BatchReport) -> None:
        if batch.status in ("succeeded", "failed", "partly_failed"):
            self.batches += 1
        self.rows += batch.rows
        self.jobs += batch.jobs
        self.failed_batches += batch.status in ("failed", "partly_failed")
        self.inference_seconds += batch.inference_seconds

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def drain(
    svc: Services, name: str, version: int, worker: str = "", *, explained: bool = False
) -> DrainReport:
    """Run batches back to back until the queue is empty; the work of one batch task.

    ``explained``: the queue of the version's explained rows (app/rqueue.py), not its plain rows.

    While a worker holds a queue, pushes send no task, so this loop is what keeps up with
    steady traffic without a Celery message per batch. After ``max_task_seconds`` it
    hands on to a fresh task (still holding the queue), so each task stays short in
    Flower and its message is acknowledged.
    """
    report = DrainReport(name, version)
    deadline = time.monotonic() + svc.settings.max_task_seconds
    while True:
        batch = run_batch(svc, name, version, worker, explained=explained)
        report.add(batch)
        if batch.status == "empty":
            return report
        if time.monotonic() >= deadline:
            svc.celery.send_task(batch_task(explained), args=[name, version])
            report.handed_on = True
            return report


def run_batch(
    svc: Services, name: str, version: int, worker: str = "", *, explained: bool = False
) -> BatchReport:
    logs.reset(model=name, version=version)  # a pool process runs one task after another
    queue = RowQueue(svc.redis, name, version, explained)
    settings = svc.settings
    # Explained rows cost shap's time each: their batches stay small (one request's worth).
    max_rows = settings.explain_max_rows if explained else settings.max_batch_rows
    items, left = collect(queue, max_rows, settings.max_batch_delay, settings.queue_linger_seconds)
    if not items:
        return BatchReport(name, version, None, 0, 0, "empty", 0.0)
    if left > 0:
        # More is waiting: let another worker process start on it while this one predicts.
        svc.celery.send_task(batch_task(explained), args=[name, version])

    batch_id = uuid.uuid4()
    logs.bind(batch_id=str(batch_id))
    started_at = utcnow()
    # Shadow items score rows of jobs another version serves: never claimed, never answered.
    shadows = [item for item in items if item.shadow]
    served_items = [item for item in items if not item.shadow]
    # A deferred job has no row to claim yet: this batch inserts it (see app/jobs.py).
    stored_ids = [item.job_id for item in served_items if not item.deferred]
    claimed = claim(svc, stored_ids, started_at) if stored_ids else set()
    items = [item for item in served_items if item.deferred or item.job_id in claimed]
    if not items and not shadows:
        return BatchReport(name, version, str(batch_id), 0, 0, "duplicate", 0.0)

    rows = [row for item in items for row in item.rows]
    shadow_rows = [row for item in shadows for row in item.rows]
    inference_seconds = 0.0
    keys: list[str] = []
    outcomes: list[list[Any] | Exception]
    try:
        matrix = np.asarray(rows + shadow_rows, dtype=np.float64)
        if settings.cache_ttl_seconds > 0:
            # The matrix the model reads, built once (predict_outputs leaves it as it was).
            keys = cache_keys(name, version, matrix[: len(rows)])
        estimator, served = svc.registry.load(name, version)
        tick = time.perf_counter()
        # One call for the batch; a job whose rows the model refuses fails alone.
        sizes = [len(item.rows) for item in [*items, *shadows]]
        outcomes = predict_by_job(estimator, served.signature, matrix, sizes)
        inference_seconds = time.perf_counter() - tick
    except PredqError as exc:  # e.g. the artifact failed its sha256 check: every job fails
        outcomes = [exc] * (len(items) + len(shadows))
    except Exception as exc:  # the rows could not be read, or the model not loaded
        log.exception("model %s v%s failed on a batch of %d rows", name, version, len(rows))
        outcomes = [exc] * (len(items) + len(shadows))
    served_outcomes, shadow_outcomes = outcomes[: len(items)], outcomes[len(items) :]
    if any(item.explain for item in items):
        served_outcomes = explain_outcomes(svc, name, version, items, served_outcomes)
    shadow_outputs = [(item, out) for item, out in zip(shadows, shadow_outcomes, strict=True)
                      if not isinstance(out, Exception)]  # fmt: skip

    results = _job_results(items, served_outcomes)
    failed = sum(result["status"] == JobStatus.FAILED for result in results)
    status = "succeeded" if not failed else "failed" if failed == len(results) else "partly_failed"
    for item, outcome in zip(items, served_outcomes, strict=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, PredqError):
            log.warning("model %s v%s refused the rows of job %s: %s", name, version, item.job_id, outcome)
    completed_at = utcnow()
    with svc.engine.begin() as conn:
        conn.execute(
            _INSERT_BATCH,
            {
                "id": batch_id,
                "model_name": name,
                "model_version": version,
                "n_rows": len(rows) + len(shadow_rows),
                "n_jobs": len(items) + len(shadows),
                "worker": worker,
                "status": status,
                "inference_seconds": inference_seconds,
                "started_at": started_at,
                "completed_at": completed_at,
            },
        )
        if shadow_outputs:
            store_shadow_outputs(conn, name, version, batch_id, shadow_outputs)
        finished = [r for item, r in zip(items, results, strict=True) if not item.deferred]
        if finished:
            finish_jobs(conn, finished, batch_id, completed_at)
        deferred = [(item, r) for item, r in zip(items, results, strict=True) if item.deferred]
        if deferred:
            store_deferred_jobs(conn, name, version, batch_id, deferred, started_at, completed_at)
    publish(svc, name, version, items, keys, served_outcomes, results, completed_at)
    observe(name, version, items, results, len(rows), inference_seconds, started_at, completed_at)
    log.info(
        "batch %s: %s v%s, %d rows from %d jobs, %.1f ms",
        batch_id,
        name,
        version,
        len(rows),
        len(items),
        inference_seconds * 1000,
        # The ids that let one job be followed from the API's log lines to this one.
        extra={
            "job_ids": [item.job_id for item in items],
            "request_ids": sorted({item.request_id for item in items if item.request_id}),
            "rows": len(rows),
            "status": status,
            "inference_ms": round(inference_seconds * 1000, 3),
        },
    )
    return BatchReport(name, version, str(batch_id), len(rows), len(items), status, inference_seconds)


def explain_outcomes(
    svc: Services, name: str, version: int, items: list[QueuedRows], outcomes: list[list[Any] | Exception]
) -> list[list[Any] | Exception]:
    """Add each row's explanation to the outputs of the items that asked, in one shap call;
    when it fails, those items fail (the others keep their outputs)."""
    asking = [i for i, item in enumerate(items) if item.explain and not isinstance(outcomes[i], Exception)]
    if not asking:
        return outcomes
    rows = [row for i in asking for row in items[i].rows]
    predictions = [output["prediction"] for i in asking for output in outcomes[i]]  # type: ignore[union-attr]
    every_class = [items[i].explain == "all" for i in asking for _ in items[i].rows]
    try:
        estimator, served = svc.registry.load(name, version)
        found = explanations(
            estimator, served, np.asarray(rows, dtype=np.float64), predictions,
            lambda: svc.registry.reference(name, version), every_class,
        )  # fmt: skip
    except Exception as exc:
        log.exception("explanations for %s v%s failed", name, version)
        failure = exc if isinstance(exc, PredqError) else ExplanationFailed(f"{type(exc).__name__}: {exc}")
        return [failure if i in asking else outcome for i, outcome in enumerate(outcomes)]
    explained = list(outcomes)
    offset = 0
    for i in asking:
        outputs = outcomes[i]
        explained[i] = [
            output | {"explanation": found[offset + j]}
            for j, output in enumerate(outputs)  # type: ignore[arg-type]
        ]
        offset += len(outputs)  # type: ignore[arg-type]
    return explained


def finish_jobs(
    conn: Connection, results: list[dict[str, Any]], batch_id: uuid.UUID | None, completed_at: Any
) -> None:
    """Write stored jobs' results (unless a job already succeeded), in job id order (see _CLAIM_JOBS)."""
    conn.execute(
        _FINISH_JOB,
        [
            {
                "job_id": uuid.UUID(r["id"]),
                "new_status": r["status"],
                "new_outputs": r["outputs"],
                "new_error": r["error"],
                "new_batch_id": batch_id,
                "new_completed_at": completed_at,
            }
            for r in sorted(results, key=lambda r: uuid.UUID(r["id"]))
        ],
    )


def store_deferred_jobs(
    conn: Connection,
    name: str,
    version: int,
    batch_id: uuid.UUID,
    finished: list[tuple[QueuedRows, dict[str, Any]]],
    started_at: datetime,
    completed_at: datetime,
) -> None:
    """Insert the rows of finished deferred jobs, outputs and all.

    The API may have inserted one as queued meanwhile (its client's wait ran out), and the
    sweeper may have queued that row again: the existing row takes the result unless it
    already succeeded, so a job is never answered twice differently.
    """
    # A deferred item carries all of its job's rows: it is queued only when none was cached.
    records = [
        {"id": uuid.UUID(item.job_id), "model_name": name, "model_version": version,
         "status": r["status"], "n_rows": item.n_rows, "inputs": item.rows, "outputs": r["outputs"],
         "error": r["error"], "idempotency_key": None, "request_hash": None, "batch_id": batch_id,
         "cached_rows": 0, "owner_key_id": item.owner, "created_at": datetime.fromisoformat(item.created_at),
         "started_at": started_at, "completed_at": completed_at}
        for item, r in finished
    ]  # fmt: skip
    records.sort(key=lambda record: record["id"])  # lock order: see _CLAIM_JOBS
    conn.execute(_STORE_DEFERRED[conn.dialect.name], records)


def store_shadow_outputs(
    conn: Connection,
    name: str,
    version: int,
    batch_id: uuid.UUID,
    shadows: list[tuple[QueuedRows, list[Any]]],
) -> None:
    """Store what the shadow version answered (each item with its outputs), once per job and
    version (a re-queue adds nothing)."""
    records = [
        {"job_id": uuid.UUID(item.job_id), "model_name": name, "model_version": version,
         "outputs": outputs, "batch_id": batch_id, "created_at": utcnow()}
        for item, outputs in shadows
    ]  # fmt: skip
    conn.execute(dialect_insert(conn)(ShadowOutput).on_conflict_do_nothing(), records)


def observe(
    name: str,
    version: int,
    items: list[QueuedRows],
    results: list[dict[str, Any]],
    n_rows: int,
    inference_seconds: float,
    started_at: datetime,
    completed_at: datetime,
) -> None:
    """Record the batch in Prometheus: its size and model time, each job's status, wait and total time."""
    BATCH_ROWS.labels(name).observe(n_rows)
    INFERENCE.labels(name).observe(inference_seconds)
    for status in FINISHED:
        count = sum(result["status"] == status for result in results)
        if count:
            JOBS.labels(name, str(version), status).inc(count)
    started = started_at.timestamp()
    for item in items:
        QUEUE_WAIT.labels(name).observe(max(0.0, started - item.enqueued_at))
        created = datetime.fromisoformat(item.created_at)
        JOB_DURATION.labels(name).observe(max(0.0, (completed_at - created).total_seconds()))


def collect(
    queue: RowQueue, max_rows: int, max_delay: float, linger: float = 0.0
) -> tuple[list[QueuedRows], int]:
    """Pop up to ``max_rows`` rows; when the first pop is not a full batch, wait ``max_delay`` for more.

    Returns the items and how many were left on the queue after the last pop. A queue
    found empty is held ``linger`` seconds more, then let go of: the next push wakes a
    worker.
    """
    items, left = queue.pop_batch(max_rows, release=linger <= 0)
    if not items and linger > 0:
        # Under light traffic the next row comes a few milliseconds later; waiting for it
        # here costs nothing, where letting go costs a Celery task (a message from the
        # API, a task start and finish in the worker) for every request.
        first = queue.wait_for_item(linger)
        items, left = ([first], len(queue)) if first else queue.pop_batch(max_rows, release=True)
    if not items:
        return items, left
    count = sum(len(item.rows) for item in items)
    if count < max_rows and max_delay > 0:
        # One wait and one more pop: polling every millisecond cost a Redis round trip each
        # time (~1 ms of a worker's CPU per batch) to end the wait early only when a batch
        # filled, which a first pop short of max_rows almost never sees within the delay.
        time.sleep(max_delay)
        more, left = queue.pop_batch(max_rows - count)
        items.extend(more)
    return items, left


def claim(svc: Services, job_ids: list[str], started_at: Any) -> set[str]:
    """Mark the jobs running; returns those not already succeeded (only those are computed)."""
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            _CLAIM_JOBS, {"job_ids": [uuid.UUID(j) for j in job_ids], "started_at": started_at}
        ).scalars()
        return {str(j) for j in claimed}


def _job_results(items: list[QueuedRows], outcomes: list[list[Any] | Exception]) -> list[dict[str, Any]]:
    """Each job's result: its outputs (with those the cache answered at submit), or its error."""
    results = []
    for item, mine in zip(items, outcomes, strict=True):
        if isinstance(mine, Exception):
            results.append(
                {"id": item.job_id, "status": JobStatus.FAILED, "outputs": None, "error": error_of(mine)}
            )
            continue
        if item.slots is None:
            job_outputs = mine
        else:
            # Part of this job was answered from the cache at submit time.
            job_outputs = [None] * item.n_rows
            for slot, output in (item.pre or {}).items():
                job_outputs[int(slot)] = output
            for slot, output in zip(item.slots, mine, strict=True):
                job_outputs[slot] = output
        results.append(
            {
                "id": item.job_id,
                "status": JobStatus.SUCCEEDED,
                "outputs": job_outputs,
                "error": None,
            }
        )
    return results


def error_of(exc: Exception) -> dict[str, Any]:
    """An exception as the error a job (or a batch-job chunk) records."""
    if isinstance(exc, PredqError):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    return {"code": "prediction_failed", "message": f"{type(exc).__name__}: {exc}"[:1000], "details": {}}


def publish(
    svc: Services,
    name: str,
    version: int,
    items: list[QueuedRows],
    keys: list[str],
    outcomes: list[list[Any] | Exception],
    results: list[dict[str, Any]],
    completed_at: Any,
) -> None:
    """Cache row outputs, hand finished jobs to pollers, and wake long-polls, in one round trip.

    ``keys`` are the served rows' cache keys in the items' order (none when the cache is
    off); ``outcomes`` each item's outputs, or the error that failed it (nothing cached).
    """
    settings = svc.settings
    cache: dict[str, bytes] = {}
    if keys:
        offset = 0
        for item, outputs in zip(items, outcomes, strict=True):
            if not isinstance(outputs, Exception):
                mine = keys[offset : offset + len(item.rows)]
                if item.explain:  # explained outputs have keys of their own (app/rqueue.py)
                    mine = cache_keys(name, version, np.asarray(item.rows, dtype=np.float64), item.explain)
                cache.update((key, orjson.dumps(output)) for key, output in zip(mine, outputs, strict=True))
            offset += len(item.rows)
    views = {
        item.job_id: encode_view(
            item.owner,
            orjson.dumps(
                job_view(
                    {
                        "id": result["id"],
                        "status": result["status"],
                        "model_name": name,
                        "model_version": version,
                        "outputs": result["outputs"],
                        "error": result["error"],
                        "created_at": item.created_at,
                        "completed_at": completed_at,
                    }
                )
            ),
        )
        for item, result in zip(items, results, strict=True)
    }
    publish_results(svc.redis, cache, views, settings.cache_ttl_seconds, settings.result_ttl_seconds)
