"""The tables a prediction touches: models, their versions and aliases, jobs, the
workers' batches, shadow outputs, and API keys."""

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
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, utcnow

#: The priorities a submit may ask for, highest first: a worker drains them in this order
#: (app/predictions/queue.py); a key's default and ceiling are among them.
PRIORITIES = ("high", "normal", "low")


class Model(Base):
    """A named model; its versions hold the artifacts."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    traffic_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Weights over aliases or versions, and a shadow (app/registry/traffic.py); None: all to champion."""
    retrain_every_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Retrain on this schedule (beat); None: only on demand."""
    retrain_on_drift: Mapped[bool] = mapped_column(default=False, server_default="0")
    """A drift check that finds the window drifted starts a retrain."""
    pool: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The worker pool whose queue (inference.<pool>) its online rows wake; None: the default pool."""
    default_deadline_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Its jobs' deadline in ms when a submit names none (set by admins); None: QUEUE_TTL_SECONDS."""

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="ModelVersion.version"
    )
    aliases: Mapped[list[ModelAlias]] = relationship(back_populates="model")


class ModelVersion(Base):
    """One registered artifact of a model, immutable once stored."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16), default="joblib", server_default="joblib")
    """``joblib`` (pickle: runs any code it holds) or ``skops`` (restores only trusted types)."""
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """For a retrained version: parent version, training run, data window, rows, parameters."""
    reference: Mapped[list[list[float]] | None] = mapped_column(JSON, nullable=True, deferred=True)
    """A sample of the training inputs, the baseline for drift checks (deferred: it is large)."""
    trusted_types: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    """For skops: the types beyond skops' defaults approved at registration; loading allows only these."""
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card_notes: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    """Intended use and limitations, in the registrant's words (the model card shows them)."""
    compiled: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The compiled backend's record (app/scoring/compiled.py): gate figures, crossover, ONNX
    artifact and sha256; None: never compiled, served by scikit-learn bit for bit."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")


class ModelAlias(Base):
    """A movable name (``champion``, ...) pointing at one version of a model."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")


class Job(Base):
    """One prediction request: its rows, its outputs and where it is in its life.

    On PostgreSQL partitioned by day on ``created_at`` (part of the key: app/db/ids.py says
    why a read by id names it too); on SQLite a plain table whose key is ``id`` alone.
    """

    __tablename__ = "jobs"
    # The console's: a model's recent failures, a key's recent jobs (migration 0017).
    __table_args__ = (
        Index(
            "ix_jobs_failed_by_model",
            "model_name",
            "completed_at",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        Index("ix_jobs_owner_created", "owner_key_id", "created_at"),
        # The sweeper's read of a day's stragglers under DETACH's lock (migration 0022): a BRIN
        # (a few bytes per 128 pages, cheap to keep) skips the day's pages finished long ago.
        Index("ix_jobs_completed_brin", "completed_at", postgresql_using="brin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """A UUIDv7 whose time is ``created_at`` (jobs stored before it: a uuid4)."""
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    outputs: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """What a submit with an Idempotency-Key sent (its key is in idempotency_keys)."""
    batch_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True, index=True)
    """The batch that answered it: no foreign key (batches' key includes their created_at),
    and a batch may be dropped with its day before a job kept longer (README, Retention)."""
    cached_rows: Mapped[int] = mapped_column(Integer, default=0)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The API key that submitted the job (None with auth off): only it or an admin key reads it."""
    explain: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """What the job asked to be explained: "predicted", "all" (every class too), or None."""
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    """high, normal or low: which of its version's row queues the job waits on."""
    deadline: Mapped[datetime | None] = mapped_column(nullable=True)
    """Not started by then, the job ends expired (never run); None: no deadline."""
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    """Where its result is announced (a webhook, app/webhooks/), or None."""
    created_at: Mapped[datetime] = mapped_column(primary_key=True, default=utcnow, index=True)
    """The time its id names (app/db/ids.py); the partition key on PostgreSQL."""
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class IdempotencyKey(Base):
    """A submit's Idempotency-Key and the job it made: unique across every day's partition,
    which a unique constraint on partitioned ``jobs`` cannot be (it would have to include
    ``created_at``). Written in the same statement as its job; kept as long as jobs are."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    """The client's key, prefixed with the owner's key id when there is one (``7:key``)."""
    job_id: Mapped[uuid.UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(index=True)
    """Its job's ``created_at``: with ``job_id`` it finds the job in one partition."""


class Batch(Base):
    """One model call made by a worker: which rows of which jobs it answered."""

    __tablename__ = "batches"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    n_rows: Mapped[int] = mapped_column(Integer)
    n_jobs: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    inference_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column()
    completed_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(primary_key=True, default=utcnow, index=True)
    """The time its id names (its start); the partition key on PostgreSQL, as for jobs."""


class ShadowOutput(Base):
    """What a shadow version answered for a job's rows: stored for comparison, never returned."""

    __tablename__ = "shadow_outputs"
    __table_args__ = (UniqueConstraint("job_id", "model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(index=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    outputs: Mapped[list[Any]] = mapped_column(JSON)
    batch_id: Mapped[uuid.UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ApiKey(Base):
    """A client's API key. Only its sha256 is stored; the token is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit: Mapped[str | None] = mapped_column(String(100), nullable=True)
    default_priority: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """The priority of this key's submits that name none; None: normal."""
    max_priority: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """The highest priority this key may ask for (a higher one is refused 403); None: any."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
