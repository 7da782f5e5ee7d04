"""One batch: pop waiting rows of one model version, one model call, write every result.

This is the whole hot path of a worker. ``run_batch`` runs one batch as steps: take (pop
from Redis, waiting for a batch to fill only when more rows are likely:
workers/batch_window.py), claim (the jobs' rows, workers/batch_store.py), predict (and
explain), store (one transaction, workers/batch_store.py), publish (cache, pollers,
metrics, workers/batch_publish.py); ``BatchWork`` (workers/batch_work.py) carries the
batch from one step to the next. ``drain`` runs batches back to back until the queue is
empty. Both take explicit services so tests can call them directly; the Celery tasks in
``workers.tasks`` are thin wrappers.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from app import logs
from app.db import utcnow
from app.db.ids import new_id
from app.errors import PredqError
from app.predictions.cache import ROWS_PER_KEY, keys_for
from app.predictions.ending import end_unrun
from app.predictions.items import QueuedRows
from app.predictions.queue import RowQueue, cache_keys, wake_worker
from app.predictions.view import JobStatus
from app.scoring.explain import ExplanationFailed, explanations
from app.scoring.inference import predict_by_job
from app.services import Services
from app.webhooks.outbox import wake_sender
from workers.batch_publish import observe, publish
from workers.batch_store import claim, store
from workers.batch_window import collect, may_wake
from workers.batch_work import RAN, BatchStatus, BatchWork, batch_status, job_results

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What one batch did; a task adds its batches up in a DrainReport."""

    model: str
    version: int
    batch_id: str | None
    rows: int
    jobs: int
    status: BatchStatus
    inference_seconds: float

    @classmethod
    def nothing_ran(
        cls, name: str, version: int, status: BatchStatus, batch_id: str | None = None
    ) -> BatchReport:
        return cls(name, version, batch_id, rows=0, jobs=0, status=status, inference_seconds=0.0)


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
        if batch.status in RAN:
            self.batches += 1
        self.rows += batch.rows
        self.jobs += batch.jobs
        self.failed_batches += batch.status in (BatchStatus.FAILED, BatchStatus.PARTLY_FAILED)
        self.inference_seconds += batch.inference_seconds

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def drain(
    svc: Services, name: str, version: int, worker: str = "", *, explained: bool = False
) -> DrainReport:
    """Run batches back to back until the queue is empty; the work of one batch task.

    ``explained``: the queue of the version's explained rows (app/predictions/queue.py), not its plain rows.

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
        if batch.status == BatchStatus.EMPTY:
            return report
        if time.monotonic() >= deadline:
            wake_worker(svc, name, version, explained=explained)
            report.handed_on = True
            return report


def run_batch(
    svc: Services, name: str, version: int, worker: str = "", *, explained: bool = False
) -> BatchReport:
    """Pop a batch of one version's waiting rows and answer it: claim → predict → store → publish.

    ``explained``: the version's explained rows (their own queue, see app/predictions/queue.py).
    """
    logs.reset(model=name, version=version)  # a pool process runs one task after another
    items = take(svc, name, version, explained)
    if not items:
        return BatchReport.nothing_ran(name, version, BatchStatus.EMPTY)
    work = claim_items(svc, name, version, items)
    if not work.items and not work.shadows:
        return BatchReport.nothing_ran(name, version, BatchStatus.DUPLICATE, str(work.id))
    predict(svc, work)
    if any(item.explain for item in work.items):
        work.outcomes = explain_outcomes(svc, name, version, work.items, work.outcomes)
    results = job_results(work.items, work.outcomes)
    status = batch_status(results)
    completed_at = utcnow()
    announced = store(svc, work, results, status=status, worker=worker, completed_at=completed_at)
    publish(svc, work, results, completed_at)
    if announced:
        wake_sender(svc.celery)
    observe(work, results, completed_at)
    _log_batch(work, status)
    return BatchReport(
        name, version, str(work.id), len(work.rows), len(work.items), status, work.inference_seconds
    )


def take(svc: Services, name: str, version: int, explained: bool) -> list[QueuedRows]:
    """Pop the next batch's items; when more is left, wake another worker process for it."""
    settings = svc.settings
    # Explained rows cost shap's time each: their batches stay small (one request's worth).
    max_rows = settings.explain_max_rows if explained else settings.max_batch_rows
    queue = RowQueue(svc.redis, name, version, explained)
    items, left = collect(queue, max_rows, settings.max_batch_delay, settings.queue_linger_seconds)
    if queue.expired:
        expire(svc, name, version, queue.expired)
    if (items or queue.expired) and left > 0 and may_wake((name, version, explained)):
        # More is waiting: let another worker process start on it while this one predicts.
        wake_worker(svc, name, version, explained=explained)
    return items


def claim_items(svc: Services, name: str, version: int, items: list[QueuedRows]) -> BatchWork:
    """The batch's work: the served items whose jobs this worker claimed, and the shadows."""
    batch_id, started_at = new_id()  # a UUIDv7: its time is the batch row's created_at
    logs.bind(batch_id=str(batch_id))
    # Checked again as the batch forms (the pop checked too, before the batch window's wait).
    late = {id(item) for item in items if item.past_deadline(started_at)}
    if late:
        expire(svc, name, version, [item for item in items if id(item) in late])
    items = [item for item in items if id(item) not in late]
    served = [item for item in items if not item.shadow]
    # A deferred job has no row to claim yet: this batch inserts it (see app/predictions/deferred.py).
    stored_ids = [item.job_id for item in served if not item.deferred]
    claimed = claim(svc, stored_ids, started_at) if stored_ids else set()
    return BatchWork(
        name,
        version,
        batch_id,
        started_at,
        items=[item for item in served if item.deferred or item.job_id in claimed],
        shadows=[item for item in items if item.shadow],
    )


def expire(svc: Services, name: str, version: int, items: list[QueuedRows]) -> None:
    """End the jobs of items found past their deadline (expired, never run); a deferred one's
    row is inserted so. A job that ran or ended meanwhile is left as it was. A database error
    is logged, not raised: the rest of the batch runs, and the sweeper expires these from
    their rows (a deferred one's once its submit, done waiting, stores it)."""
    served = [item for item in items if not item.shadow]
    stored = [uuid.UUID(item.job_id) for item in served if not item.deferred]
    deferred = [item for item in served if item.deferred]
    if not served:
        return
    try:
        end_unrun(svc, JobStatus.EXPIRED, stored, model=(name, version), deferred=deferred)
    except SQLAlchemyError as exc:
        ids = [item.job_id for item in served]
        log.warning(
            "could not expire jobs past their deadline, left to the sweeper: %s", exc, extra={"job_ids": ids}
        )


def predict(svc: Services, work: BatchWork) -> None:
    """One model call for the whole batch (shadows included); a job whose rows the model
    refuses fails alone, and an error that stops the call fails every job."""
    rows = work.rows
    jobs = len(work.items) + len(work.shadows)
    try:
        matrix = work.matrix()
        if svc.settings.cache_ttl_seconds > 0:
            # The matrix the model reads, built once (predict_outputs leaves it as it was).
            work.keys = _cache_keys(work, matrix[: len(rows)])
        loaded = svc.registry.loaded(work.name, work.version)
        compiled = loaded.compiled  # set only for a version compiled and serving (INFERENCE_BACKEND)
        if compiled is not None and compiled.serves(len(matrix)):
            work.backend = compiled.backend
        tick = time.perf_counter()
        sizes = [len(item.rows) for item in [*work.items, *work.shadows]]
        outcomes = predict_by_job(loaded.estimator, loaded.served.signature, matrix, sizes, compiled)
        work.inference_seconds = time.perf_counter() - tick
    except PredqError as exc:  # e.g. the artifact failed its sha256 check: every job fails
        outcomes = [exc] * jobs
    except Exception as exc:  # the rows could not be read, or the model not loaded
        log.exception("model %s v%s failed on a batch of %d rows", work.name, work.version, len(rows))
        outcomes = [exc] * jobs
    work.outcomes, work.shadow_outcomes = outcomes[: len(work.items)], outcomes[len(work.items) :]
    for item, outcome in zip(work.items, work.outcomes, strict=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, PredqError):
            log.warning(
                "model %s v%s refused the rows of job %s: %s", work.name, work.version, item.job_id, outcome
            )


def _cache_keys(work: BatchWork, matrix: np.ndarray) -> list[str]:
    """The served items' cache keys, in order, each of its item's kind (plain or explained,
    app/predictions/queue.py): a key per row, or one for a request cached whole (app/predictions/cache.py).

    A batch holds one kind, but on the explained rows' queue "predicted" and "all" items
    may share a batch: those are keyed item by item, as requests cached whole are.
    """
    kinds = {item.explain for item in work.items}
    if len(kinds) <= 1 and all(len(item.rows) <= ROWS_PER_KEY for item in work.items):
        return cache_keys(work.name, work.version, matrix, kinds.pop() if kinds else None)
    keys, start = [], 0
    for item in work.items:
        end = start + len(item.rows)
        keys += keys_for(work.name, work.version, matrix[start:end], item.explain)
        start = end
    return keys


def _log_batch(work: BatchWork, status: BatchStatus) -> None:
    rows = len(work.rows)
    log.info(
        "batch %s: %s v%s, %d rows from %d jobs, %.1f ms",
        work.id,
        work.name,
        work.version,
        rows,
        len(work.items),
        work.inference_seconds * 1000,
        # The ids that let one job be followed from the API's log lines to this one.
        extra={
            "job_ids": [item.job_id for item in work.items],
            "request_ids": sorted({item.request_id for item in work.items if item.request_id}),
            "rows": rows,
            "status": status,
            "inference_ms": round(work.inference_seconds * 1000, 3),
        },
    )


def explain_outcomes(
    svc: Services, name: str, version: int, items: list[QueuedRows], outcomes: list[list[Any] | Exception]
) -> list[list[Any] | Exception]:
    """Add each row's explanation to the outputs of the items that asked, in one shap call;
    when it fails, those items fail (the others keep their outputs)."""
    asking = {i: outcome for i, (item, outcome) in enumerate(zip(items, outcomes, strict=True))
              if item.explain and not isinstance(outcome, Exception)}  # fmt: skip
    if not asking:
        return outcomes
    rows = [row for i in asking for row in items[i].rows]
    predictions = [output["prediction"] for outputs in asking.values() for output in outputs]
    every_class = [items[i].explain == "all" for i in asking for _ in items[i].rows]
    try:
        estimator, served = svc.registry.load(name, version)
        found = explanations(
            estimator, served, np.asarray(rows, dtype=np.float64), predictions,
            lambda: svc.registry.reference(name, version), every_class, svc.registry.derived("explainers"),
        )  # fmt: skip
    except Exception as exc:
        log.exception("explanations for %s v%s failed", name, version)
        failure = exc if isinstance(exc, PredqError) else ExplanationFailed(f"{type(exc).__name__}: {exc}")
        return [failure if i in asking else outcome for i, outcome in enumerate(outcomes)]
    explained = list(outcomes)
    offset = 0
    for i, outputs in asking.items():
        explained[i] = [output | {"explanation": found[offset + j]} for j, output in enumerate(outputs)]
        offset += len(outputs)
    return explained
