"""Batch jobs, the API's side: a file in, checked and cut into chunks, one bulk task per
chunk; a job's view, its cancellation and its result file (app/batch_jobs/__init__.py
draws the whole road).

A job belongs to the API key that made it, as prediction jobs do (``may_read``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from app.access.auth import may_read
from app.batch_jobs import files, storage
from app.batch_jobs.intake import Intake
from app.batch_jobs.storage import CHUNK_STATUSES, FINISHED, input_key
from app.db import BulkChunk, BulkJob, utcnow
from app.errors import (
    BatchJobFinished,
    BatchJobNotFound,
    FileTooLarge,
    Forbidden,
    InvalidInput,
)
from app.services import Services
from app.webhooks.endpoints import check_callback

if TYPE_CHECKING:
    from app.access.auth import Principal

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("parquet", "csv")
_SPOOL_PIECE = 1 << 20
#: Failed chunks listed in a job's view (the count is always there).
_FAILED_SHOWN = 20


def spool(stream: IO[bytes], target: Path, limit: int) -> int:
    """Copy an upload to ``target`` piece by piece (never whole in memory); FileTooLarge past ``limit``."""
    size = 0
    with open(target, "wb") as out:
        while piece := stream.read(_SPOOL_PIECE):
            size += len(piece)
            if size > limit:
                raise FileTooLarge(f"the file is larger than BATCH_MAX_BYTES ({limit} bytes)", limit=limit)
            out.write(piece)
    return size


def server_file(settings: Any, raw: str) -> tuple[Path, str]:
    """A server-side input path and its format; refused unless it lies under BATCH_INPUT_ROOT."""
    if not settings.batch_input_root:
        raise Forbidden(
            "this server reads no server-side files (BATCH_INPUT_ROOT is not set); upload the file"
        )
    root = Path(settings.batch_input_root).resolve()
    path = (root / raw).resolve()  # an absolute ``raw`` stays absolute; symlinks are followed
    if not path.is_relative_to(root):
        raise Forbidden(f"{raw!r} is outside BATCH_INPUT_ROOT", path=raw)
    if not path.is_file():
        raise InvalidInput(f"no file {raw!r} under BATCH_INPUT_ROOT", field="path")
    fmt = files.SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{raw!r} is not a .csv or .parquet file", field="path")
    if path.stat().st_size > settings.batch_max_bytes:
        raise FileTooLarge(
            f"the file is larger than BATCH_MAX_BYTES ({settings.batch_max_bytes} bytes)",
            limit=settings.batch_max_bytes,
        )
    return path, fmt


def create(
    svc: Services,
    name: str,
    source: Path,
    fmt: str,
    *,
    label: str,
    version: int | None = None,
    alias: str | None = None,
    id_column: str | None = None,
    output_format: str = "parquet",
    owner: int | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """Check ``source``, store the job and its chunks, and queue one task per chunk; its end
    is announced to ``callback_url`` (``batch_job.finished``, app/webhooks/) when given.

    ``label`` is what the view calls the input (an upload's name, a server path). Raises
    InvalidInput (nothing left stored or queued) when the file does not fit the model; chunks
    are scored while the rest of the file is read (intake.py).
    """
    if output_format not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"output_format must be parquet or csv, not {output_format!r}", field="output_format"
        )
    served = svc.registry.resolve(name, version=version, alias=alias)
    settings = svc.settings
    check_callback(svc.engine, settings, callback_url, owner)
    job_id = uuid.uuid4()
    intake = Intake(
        svc,
        job_id,
        {"model_name": name, "model_version": served.version, "source": label[:1000], "id_column": id_column,
         "output_format": output_format, "chunk_rows": settings.batch_chunk_rows, "owner_key_id": owner,
         "callback_url": callback_url},
    )  # fmt: skip
    try:
        normalized = files.normalize(
            source,
            fmt,
            lambda index: svc.batches.writing(input_key(job_id, index)),
            served.signature,
            settings.batch_chunk_rows,
            id_column,
            intake.written,  # each chunk is scored as soon as it is whole (intake.py)
        )
        intake.seal(normalized.rows, normalized.chunks)
    except BaseException:
        # A file refused (or a database down) leaves nothing behind.
        intake.discard()
        raise
    log.info(
        "batch job %s: %s v%s, %d rows in %d chunks from %s",
        job_id,
        name,
        served.version,
        normalized.rows,
        normalized.chunks,
        label,
        extra={"batch_job_id": str(job_id), "rows": normalized.rows},
    )
    return get(svc, str(job_id), None)


def get(svc: Services, job_id: str, reader: Principal | None, wait: float = 0.0) -> dict[str, Any]:
    """A batch job's public view: status, progress, speed, ETA and where the result is.

    With ``wait`` > 0 and the job not finished, hold until it ends or ``wait`` passes
    (storage.py's end mark), then read it again: the view as it is then, finished or not.
    """
    job = _job(svc, job_id, reader)  # another key's job is not found before anyone waits
    if wait > 0 and job.status not in FINISHED:
        storage.wait_for_end(svc, job.id, wait)
        job = _job(svc, job_id, reader)
    with svc.engine.connect() as conn:
        by_status = conn.execute(
            select(BulkChunk.status, func.count(), func.sum(BulkChunk.rows))
            .where(BulkChunk.job_id == job.id)
            .group_by(BulkChunk.status)
        ).all()
        failed = conn.execute(
            select(BulkChunk.index, BulkChunk.rows, BulkChunk.error)
            .where(BulkChunk.job_id == job.id, BulkChunk.status == "failed")
            .order_by(BulkChunk.index)
            .limit(_FAILED_SHOWN)
        ).all()
    counts = {status: count for status, count, _ in by_status}
    rows = {status: int(total) for status, _, total in by_status}
    return view(job, counts, rows, failed)


def view(job: Any, counts: dict[str, int], rows: dict[str, int], failed: Sequence[Any]) -> dict[str, Any]:
    """The public JSON of a batch job, from its row and its chunks' counts and rows by status
    (``failed``: the first failed chunks, shown)."""
    rows_done = rows.get("succeeded", 0)
    elapsed = _seconds_between(job.started_at, job.completed_at or utcnow()) if job.started_at else None
    rate = rows_done / elapsed if elapsed else None
    left = rows.get("queued", 0) + rows.get("running", 0)
    finished = job.status in FINISHED
    return {
        "id": str(job.id),
        "status": job.status,
        "model": {"name": job.model_name, "version": job.model_version},
        "source": job.source,
        "id_column": job.id_column,
        "rows": {"total": job.rows_total, "done": rows_done},
        "chunks": {
            "total": job.chunks_total,
            "chunk_rows": job.chunk_rows,
            **{status: counts.get(status, 0) for status in CHUNK_STATUSES},
        },
        "rows_per_second": round(rate, 1) if rate else None,
        "eta_seconds": round(left / rate, 1) if rate and not finished else None,
        "failed_chunks": [
            {"index": f.index, "first_row": f.index * job.chunk_rows, "rows": f.rows, "error": f.error}
            for f in failed
        ],
        "result": (
            {"url": f"/v1/batch-jobs/{job.id}/result", "format": job.output_format, "path": job.result_path}
            if job.result_path
            else None
        ),
        "error": job.error,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
    }


def cancel(svc: Services, job_id: str, reader: Principal | None) -> dict[str, Any]:
    """Cancel a job: its queued chunks are dropped, running ones finish; 409 once it has finished."""
    job = _job(svc, job_id, reader)
    now = utcnow()
    with svc.engine.begin() as conn:
        cancelled = conn.execute(
            update(BulkJob)
            .where(BulkJob.id == job.id, BulkJob.status.in_(("queued", "running")))
            .values(status="cancelled", completed_at=now)
        ).rowcount
        if cancelled:
            conn.execute(
                update(BulkChunk)
                .where(BulkChunk.job_id == job.id, BulkChunk.status == "queued")
                .values(status="cancelled", completed_at=now)
            )
    if not cancelled:
        raise BatchJobFinished(f"batch job {job_id} has already finished ({job.status})", status=job.status)
    storage.announce_end(svc, job.id, "cancelled")
    log.info("batch job %s cancelled", job_id, extra={"batch_job_id": job_id})
    return get(svc, job_id, reader)


def result_file(svc: Services, job_id: str, reader: Principal | None) -> tuple[str, str]:
    """The finished job's result (its key in BATCH_ROOT) and format; BatchJobNotFound while there is none."""
    job = _job(svc, job_id, reader)
    if not job.result_path:
        raise BatchJobNotFound(
            f"batch job {job_id} has no result ({job.status})", id=job_id, status=job.status
        )
    return job.result_path, job.output_format


def _job(svc: Services, job_id: str, reader: Principal | None) -> Any:
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise BatchJobNotFound(f"no batch job with id {job_id!r}", id=job_id) from None
    with svc.engine.connect() as conn:
        job = conn.execute(select(BulkJob.__table__).where(BulkJob.id == parsed)).first()
    if job is None or not may_read(reader, job.owner_key_id):
        # Another key's job is answered as no job: ids do not leak.
        raise BatchJobNotFound(f"no batch job with id {job_id!r}", id=job_id)
    return job


def _seconds_between(start: datetime, end: datetime) -> float:
    if start.tzinfo is None:  # SQLite returns naive UTC datetimes
        start = start.replace(tzinfo=end.tzinfo)
    if end.tzinfo is None:
        end = end.replace(tzinfo=start.tzinfo)
    return max(0.0, (end - start).total_seconds())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
