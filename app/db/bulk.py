"""The tables of batch jobs (files scored in chunks by the bulk workers)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class BulkJob(Base):
    """A batch job: one file scored in chunks on the bulk queue (app/batch_jobs/jobs.py, workers/bulk.py)."""

    __tablename__ = "bulk_jobs"
    # The console's newest batch jobs, all or a key's own (migration 0017).
    __table_args__ = (
        Index("ix_bulk_jobs_created", "created_at"),
        Index("ix_bulk_jobs_owner_created", "owner_key_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """queued, running, succeeded, partial (some chunks failed), failed or cancelled."""
    source: Mapped[str] = mapped_column(String(1000))
    """What the client sent: an uploaded file's name or a server-side path."""
    id_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    output_format: Mapped[str] = mapped_column(String(8))
    rows_total: Mapped[int] = mapped_column(Integer)
    chunk_rows: Mapped[int] = mapped_column(Integer)
    chunks_total: Mapped[int] = mapped_column(Integer)
    result_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    """Relative to BATCH_ROOT, once the job finished with rows to show."""
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    """Where its end is announced (``batch_job.finished``), or None."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class BulkChunk(Base):
    """One chunk of a batch job: a row group of its input, scored by one task into one part file."""

    __tablename__ = "bulk_chunks"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("bulk_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """queued, running, succeeded, failed or cancelled."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When a task for it was last sent (the sweeper sends another when it is lost)."""
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
