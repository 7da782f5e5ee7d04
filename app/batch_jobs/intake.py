"""A batch job stored and queued while its file is still being read: each chunk is scored as
soon as its file is whole, so the bulk workers' cores work beside the check and rewrite of
the rest (1M rows: the rewrite is ~0.8 s of a ~3 s job), not after it.

A job is *sealed* once its whole file is read: ``chunks_total`` (0 until then) says how many
chunks it has, and no job is finished before (workers/bulk.py ``finish``). Each chunk is
stored and sent one step behind the rewrite, when the next chunk's file is written; the last
is stored in the seal's own transaction and sent after it, so the job's last chunk to finish
always finds it sealed, and whoever finishes it is a bulk worker, never the API.

A file refused part way (a bad value in row 700,000) takes its job back: the chunks' rows and
the job's row are deleted, then its files; a chunk scored meanwhile finds its job gone and
deletes what it wrote (workers/bulk.py), so a refused file leaves nothing, as before. A job
whose API process died while reading its file is never sealed: the sweeper deletes it once
nothing has moved for BULK_CHUNK_TIMEOUT_SECONDS (``drop_abandoned``); it was never accepted.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.batch_jobs.storage import job_dir, send_chunk
from app.db import BulkChunk, BulkJob, utcnow
from app.errors import StoreUnavailable
from app.services import Services

log = logging.getLogger(__name__)


class Intake:
    """One job's chunks, stored and sent as its file is rewritten (``written``), then ``seal``."""

    def __init__(self, svc: Services, job_id: uuid.UUID, job: dict[str, Any]) -> None:
        self.svc, self.job_id, self.job = svc, job_id, job
        self.stored = False
        self.held: tuple[int, int] | None = None  # the newest chunk written, not yet sent

    def written(self, index: int, rows: int) -> None:
        """Chunk ``index`` is whole: send the one before it (this one may be the last)."""
        if not self.stored:
            with self.svc.engine.begin() as conn:
                conn.execute(
                    insert(BulkJob),
                    self.job | {"id": self.job_id, "status": "queued", "rows_total": 0, "chunks_total": 0,
                                "created_at": utcnow()},
                )  # fmt: skip
            self.stored = True
        if self.held is not None:
            self._store(*self.held)
            send_chunk(self.svc, self.job_id, self.held[0], self.job["model_name"], self.held[1])
        self.held = (index, rows)

    def seal(self, rows: int, chunks: int) -> None:
        """The whole file is read: store the totals and the last chunk, then send it."""
        assert self.held is not None and self.held[0] == chunks - 1, "the last chunk is the one held"
        with self.svc.engine.begin() as conn:
            conn.execute(select(BulkJob.id).where(BulkJob.id == self.job_id).with_for_update())
            self._store(*self.held, conn)
            conn.execute(
                update(BulkJob).where(BulkJob.id == self.job_id).values(rows_total=rows, chunks_total=chunks)
            )
        send_chunk(self.svc, self.job_id, self.held[0], self.job["model_name"], self.held[1])

    def discard(self) -> None:
        """Take the job back (its file was refused, or the database failed): rows, then files."""
        if self.stored:
            try:
                with self.svc.engine.begin() as conn:
                    conn.execute(delete(BulkChunk).where(BulkChunk.job_id == self.job_id))
                    conn.execute(delete(BulkJob).where(BulkJob.id == self.job_id))
            except SQLAlchemyError as exc:  # the database is down: the job stays unsealed, never finished
                log.warning("batch job %s was refused but its rows stay: %s", self.job_id, exc)
        with contextlib.suppress(StoreUnavailable):
            self.svc.batches.delete_dir(job_dir(self.job_id))

    def _store(self, index: int, rows: int, conn: Any = None) -> None:
        row = {"job_id": self.job_id, "index": index, "status": "queued", "attempts": 0,
               "queued_at": utcnow(), "rows": rows}  # fmt: skip
        if conn is not None:
            conn.execute(insert(BulkChunk), row)
            return
        with self.svc.engine.begin() as own:
            own.execute(insert(BulkChunk), row)


def drop_abandoned(svc: Services, limit: int = 100) -> int:
    """Delete up to ``limit`` jobs never sealed, whose file's reading stopped (no job row or chunk
    stored for BULK_CHUNK_TIMEOUT_SECONDS: the API process died); their files first, then rows."""
    cutoff = utcnow() - timedelta(seconds=svc.settings.bulk_chunk_timeout_seconds)
    newest_chunk = (
        select(func.max(BulkChunk.queued_at)).where(BulkChunk.job_id == BulkJob.id).scalar_subquery()
    )
    with svc.engine.connect() as conn:
        abandoned = list(
            conn.execute(
                select(BulkJob.id)
                .where(BulkJob.chunks_total == 0, BulkJob.status.in_(("queued", "running")))
                .where(BulkJob.created_at < cutoff, func.coalesce(newest_chunk, BulkJob.created_at) < cutoff)
                .limit(limit)
            ).scalars()
        )
    for job_id in abandoned:
        svc.batches.delete_dir(job_dir(job_id))
        with svc.engine.begin() as conn:
            conn.execute(delete(BulkChunk).where(BulkChunk.job_id == job_id))
            conn.execute(delete(BulkJob).where(BulkJob.id == job_id, BulkJob.chunks_total == 0))
    if abandoned:
        log.warning("sweeper deleted %d batch jobs whose file was never read to its end", len(abandoned))
    return len(abandoned)
