"""Batch jobs, the workers' side: score one chunk into a part file; the last chunk merges them.

Exactly once in effect, whatever is redelivered or re-sent: a chunk is claimed unless it
already finished (a crashed worker's chunk is claimed again), its part file is written to
a temporary name and renamed (a half-written part is never taken for a finished one; a
chunk scored twice writes the same part twice), and the job is finished by whoever sees
no chunk left while holding the job's row lock. The merge reads the parts in chunk order,
so the result holds every scored row once, in input order.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import delete, func, select, update

from app.batch_jobs import files, storage
from app.celery_app import BULK_QUEUE
from app.db import BulkChunk, BulkJob, utcnow
from app.errors import StoreUnavailable
from app.metrics import BULK_CHUNKS, BULK_ROWS
from app.scoring.inference import predict_arrays
from app.services import Services
from app.storage import retried
from app.webhooks import outbox
from app.webhooks.events import Event
from workers import bulk_files
from workers.batch_work import error_of

log = logging.getLogger(__name__)

_UNFINISHED = ("queued", "running")


def score_chunk(svc: Services, job_id: str, index: int) -> dict[str, Any]:
    """Score chunk ``index`` of a batch job into its part file; finish the job if it was the last."""
    parsed = uuid.UUID(job_id)
    job = _claim(svc, parsed, index)
    if job is None:
        return {"job": job_id, "chunk": index, "status": "skipped"}
    store, retry = svc.batches, svc.settings.store_retry_seconds
    tick = time.perf_counter()
    error: dict[str, Any] | None = None
    try:
        loaded = svc.registry.loaded(job.model_name, job.model_version)
        signature = loaded.served.signature
        matrix, ids = retried(lambda: bulk_files.read_chunk(store, parsed, index, signature), retry)
        # A compiled version answers only chunks within its crossover (BATCH_CHUNK_ROWS is past it).
        predictions, proba = predict_arrays(loaded.estimator, signature, matrix, loaded.compiled)
        table = output_table(job, index, ids, predictions, proba, signature)
        retried(lambda: bulk_files.write_part(store, storage.part_key(parsed, index), table), retry)
        status, rows = "succeeded", len(matrix)
    except Exception as exc:  # the model refused the rows, or the file could not be read
        log.warning("chunk %d of batch job %s failed: %s", index, job_id, exc)
        status, error, rows = "failed", error_of(exc), 0
    seconds = time.perf_counter() - tick
    left = _record(svc, parsed, index, status, error, seconds)
    if left is None:
        # The job was taken back while this chunk was scored (its file refused further on,
        # app/batch_jobs/intake.py): what this chunk wrote goes with it.
        with contextlib.suppress(StoreUnavailable):
            store.delete_dir(storage.job_dir(parsed))
        return {"job": job_id, "chunk": index, "status": "discarded"}
    BULK_CHUNKS.labels(job.model_name, status).inc()
    BULK_ROWS.labels(job.model_name).inc(rows)
    if left == 0:
        finish(svc, parsed)
    return {"job": job_id, "chunk": index, "status": status, "rows": rows, "seconds": round(seconds, 3)}


def output_table(
    job: Any,
    index: int,
    ids: pa.Array | None,
    predictions: np.ndarray,
    proba: np.ndarray | None,
    signature: dict[str, Any],
) -> pa.Table:
    """A chunk's output: the input's id (or row number), the prediction, one column per class probability."""
    if ids is None:
        first = index * job.chunk_rows
        ids = pa.array(np.arange(first, first + len(predictions), dtype=np.int64))
    columns = {job.id_column or files.ROW_COLUMN: ids, "prediction": pa.array(predictions)}
    if proba is not None:
        for j, label in enumerate(signature["classes"]):
            columns[f"probability_{label}"] = pa.array(proba[:, j])
    return pa.table(columns)


def finish(svc: Services, job_id: uuid.UUID) -> str | None:
    """Merge the parts into the result and settle the job's status; idempotent.

    Returns the status it set, or None when the job had already finished (or still has
    chunks to score).
    """
    with svc.engine.connect() as conn:
        job = conn.execute(select(BulkJob.__table__).where(BulkJob.id == job_id)).first()
        # Rows typed Any: a column named "index" shadows the tuple method of that name.
        chunks: Sequence[Any] = conn.execute(
            select(BulkChunk.index, BulkChunk.status)
            .where(BulkChunk.job_id == job_id)
            .order_by(BulkChunk.index)
        ).all()
    if job is None or job.status in storage.FINISHED or any(c.status in _UNFINISHED for c in chunks):
        return None
    if not chunks or len(chunks) != job.chunks_total:  # its file is still being read (not sealed)
        return None
    scored = [c.index for c in chunks if c.status == "succeeded"]
    status = "succeeded" if len(scored) == len(chunks) else "partial" if scored else "failed"
    result_path = None
    if scored:
        # The store down: this raises, the job stays running, and the sweeper finishes it later.
        result_path = storage.result_key(job_id, job.output_format)
        parts = [storage.part_key(job_id, i) for i in scored]
        bulk_files.merge(svc.batches, parts, result_path, job.output_format)
    failed = len(chunks) - len(scored)
    error = (
        {"code": "chunks_failed", "message": f"{failed} of {len(chunks)} chunks failed", "details": {}}
        if failed
        else None
    )
    with svc.engine.begin() as conn:
        now = utcnow()
        settled = conn.execute(
            update(BulkJob)
            .where(BulkJob.id == job_id, BulkJob.status.in_(_UNFINISHED))
            .values(status=status, result_path=result_path, error=error, completed_at=now)
        ).rowcount
        if settled:  # announced with the end it announces (app/webhooks/)
            outbox.event_deliveries(conn, Event.BATCH_JOB_FINISHED, str(job_id), now, owner=job.owner_key_id,
                                    callback_url=job.callback_url,
                                    payload=outbox.batch_job_payload(job, status, error, now))  # fmt: skip
    if not settled:
        return None
    storage.announce_end(svc, job_id, status)  # committed: wake whoever waits (?wait=)
    # The result holds every scored row: the rewritten input and the parts are not needed
    # (left behind if the store is down now: the job's expiry deletes its whole directory).
    try:
        svc.batches.delete_dir(storage.input_dir(job_id))
        svc.batches.delete_dir(storage.parts_dir(job_id))
    except StoreUnavailable as exc:
        log.warning("batch job %s: its input and parts stay until it expires: %s", job_id, exc)
    log.info(
        "batch job %s %s: %d rows, %d of %d chunks failed",
        job_id,
        status,
        job.rows_total,
        failed,
        len(chunks),
        extra={"batch_job_id": str(job_id), "status": status},
    )
    return status


def requeue_stuck_chunks(svc: Services) -> int:
    """Send again the chunks whose task was lost; finish jobs whose last chunk's worker died
    before finishing them. Returns how many chunks were sent.

    A chunk queued longer than STUCK_JOB_SECONDS is sent again only when the bulk queue
    holds no message (say, Redis was wiped): while messages wait, a long file's last
    chunks are merely waiting their turn. A chunk running longer than
    BULK_CHUNK_TIMEOUT_SECONDS lost its worker (a redelivered one is claimed again).
    """
    settings = svc.settings
    now = utcnow()
    stuck = (BulkChunk.status == "running") & (
        BulkChunk.started_at < now - timedelta(seconds=settings.bulk_chunk_timeout_seconds)
    )
    if _bulk_messages_waiting(svc) == 0:
        stuck |= (BulkChunk.status == "queued") & (
            BulkChunk.queued_at < now - timedelta(seconds=settings.stuck_job_seconds)
        )
    with svc.engine.begin() as conn:
        chunks: Sequence[Any] = conn.execute(
            select(BulkChunk.job_id, BulkChunk.index, BulkChunk.rows, BulkJob.model_name)
            .join(BulkJob, BulkJob.id == BulkChunk.job_id)
            .where(stuck, BulkJob.status.in_(_UNFINISHED))
            .order_by(BulkChunk.job_id, BulkChunk.index)
            .limit(1000)
        ).all()
        for chunk in chunks:
            conn.execute(
                update(BulkChunk)
                .where(BulkChunk.job_id == chunk.job_id, BulkChunk.index == chunk.index)
                .values(queued_at=now)
            )
        # Every chunk done but the job not finished: the worker that was finishing it died.
        unsettled_ids = conn.execute(
            select(BulkJob.id)
            .where(BulkJob.status.in_(_UNFINISHED))
            .where(
                ~select(BulkChunk.index)
                .where(BulkChunk.job_id == BulkJob.id, BulkChunk.status.in_(_UNFINISHED))
                .exists()
            )
        ).scalars()
        unsettled = list(unsettled_ids)
    sent = sum(storage.send_chunk(svc, c.job_id, c.index, c.model_name, c.rows) for c in chunks)
    for job_id in unsettled:
        finish(svc, job_id)
    if chunks:
        log.warning("sweeper re-sent %d batch-job chunks", len(chunks))
    return sent


def expire_old_batch_jobs(svc: Services, limit: int = 100) -> int:
    """Delete up to ``limit`` finished batch jobs older than ``job_retention_seconds``: their
    files under BATCH_ROOT (result included), then their rows. Returns how many.

    As with prediction jobs, queued and running ones are never deleted; ``0`` keeps them all.
    """
    if svc.settings.job_retention_seconds <= 0:
        return 0
    cutoff = utcnow() - timedelta(seconds=svc.settings.job_retention_seconds)
    with svc.engine.connect() as conn:
        expired = list(
            conn.execute(
                select(BulkJob.id)
                .where(BulkJob.status.in_(storage.FINISHED), BulkJob.completed_at < cutoff)
                .limit(limit)
            ).scalars()
        )
    for job_id in expired:
        # Files first: a sweep that dies between the two leaves rows to try again, never
        # files no row points at.
        svc.batches.delete_dir(storage.job_dir(job_id))
        with svc.engine.begin() as conn:
            conn.execute(delete(BulkChunk).where(BulkChunk.job_id == job_id))
            conn.execute(delete(BulkJob).where(BulkJob.id == job_id))
    if expired:
        log.info("sweeper deleted %d batch jobs older than the retention", len(expired))
    return len(expired)


def _claim(svc: Services, job_id: uuid.UUID, index: int) -> Any:
    """Mark the chunk running and return its job, or None when there is nothing to do (the
    chunk finished or was cancelled, or the job is gone)."""
    now = utcnow()
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            update(BulkChunk)
            .where(BulkChunk.job_id == job_id, BulkChunk.index == index, BulkChunk.status.in_(_UNFINISHED))
            .values(status="running", started_at=now, attempts=BulkChunk.attempts + 1)
        ).rowcount
        if not claimed:
            return None
        conn.execute(
            update(BulkJob)
            .where(BulkJob.id == job_id, BulkJob.status == "queued")
            .values(status="running", started_at=now)
        )
        return conn.execute(select(BulkJob.__table__).where(BulkJob.id == job_id)).first()


def _record(
    svc: Services, job_id: uuid.UUID, index: int, status: str, error: dict[str, Any] | None, seconds: float
) -> int | None:
    """Store the chunk's outcome; how many chunks of the job are left to score (None: the job is gone).

    The job's row is locked first, so of two chunks finishing at once exactly one sees
    none left (SQLite serializes writers anyway).
    """
    with svc.engine.begin() as conn:
        if conn.execute(select(BulkJob.id).where(BulkJob.id == job_id).with_for_update()).first() is None:
            return None
        conn.execute(
            update(BulkChunk)
            .where(BulkChunk.job_id == job_id, BulkChunk.index == index, BulkChunk.status == "running")
            .values(status=status, error=error, completed_at=utcnow(), seconds=seconds)
        )
        left = conn.execute(
            select(func.count())
            .select_from(BulkChunk)
            .where(BulkChunk.job_id == job_id, BulkChunk.status.in_(_UNFINISHED))
        ).scalar_one()
    return int(left)


def _bulk_messages_waiting(svc: Services) -> int | None:
    """Messages on the bulk queue (None when the broker cannot say)."""
    try:
        with svc.celery.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=BULK_QUEUE, passive=True).message_count
    except (BrokerError, OSError) as exc:
        log.warning("could not count the bulk queue: %s", exc)
        return None
    except ChannelError:  # Redis: the queue's list is gone when it is empty (NOT_FOUND)
        return 0
