"""Engine creation and the schema's SQLAlchemy 2.0 models.

The schema itself is created only by the Alembic migrations in ``migrations/``; these
classes describe it for queries and for ``alembic revision --autogenerate``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Each supported dialect's insert(): ON CONFLICT is spelled by each dialect's own.
INSERT_BY_DIALECT: dict[str, Any] = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


def dialect_insert(conn: Any) -> Any:
    """The insert() of ``conn``'s dialect (PostgreSQL or SQLite)."""
    return INSERT_BY_DIALECT[conn.dialect.name]


def newest_rows(
    engine: Engine, table: Any, model_name: str, order_by: Any, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``table`` for one model (newest first, by ``order_by``), as dicts."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.__table__)
            .where(table.model_name == model_name)
            .order_by(order_by.desc())
            .limit(limit)
        ).mappings()
        return [dict(row) for row in rows]


class Base(DeclarativeBase):
    # Stable constraint names so migrations look the same on PostgreSQL and SQLite.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Model(Base):
    """A named model; its versions hold the artifacts."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    traffic_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Weights over aliases or versions, and a shadow (app/lifecycle/traffic.py); None: all to champion."""
    retrain_every_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Retrain on this schedule (beat); None: only on demand."""
    retrain_on_drift: Mapped[bool] = mapped_column(default=False, server_default="0")
    """A drift check that finds the window drifted starts a retrain."""

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
    """One prediction request: its rows, its outputs and where it is in its life."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    outputs: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(240), unique=True, nullable=True)
    """The client's Idempotency-Key, prefixed with the owner's key id when there is one (``7:key``)."""
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"), nullable=True, index=True)
    cached_rows: Mapped[int] = mapped_column(Integer, default=0)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The API key that submitted the job (None with auth off): only it or an admin key reads it."""
    explain: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """What the job asked to be explained: "predicted", "all" (every class too), or None."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)


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
    completed_at: Mapped[datetime] = mapped_column()


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """The true label (or value) of one served row, beside what was predicted and by which version."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("job_id", "row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(index=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    row: Mapped[int] = mapped_column(Integer)
    label: Mapped[Any] = mapped_column(JSON)
    prediction: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEvent(Base):
    """The audit trail of aliases: every move, who made it, when, from where, to where, why."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    alias: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(1000), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingExample(Base):
    """One labeled row of a model's training set: imported, or a production row given feedback."""

    __tablename__ = "training_examples"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    features: Mapped[list[float]] = mapped_column(JSON)
    label: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    """import or feedback."""
    import_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """The import it came with (training_imports); None for feedback."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TrainingImport(Base):
    """One import of labeled rows: its size and checks; dropping it takes its rows out of every later run."""

    __tablename__ = "training_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    source: Mapped[str] = mapped_column(String(1000), default="")
    rows: Mapped[int] = mapped_column(Integer)
    """Rows added to the training set (rows carved into the evaluation set not counted)."""
    checks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dropped_at: Mapped[datetime | None] = mapped_column(nullable=True)


class EvaluationSet(Base):
    """A model's fixed evaluation rows, never trained on: each retrain scores both models on them."""

    __tablename__ = "evaluation_sets"
    __table_args__ = (UniqueConstraint("model_name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(1000), default="")
    rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[list[list[float]]] = mapped_column(JSON, deferred=True)
    labels: Mapped[list[Any]] = mapped_column(JSON, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One retraining of a model: what it trained on, how both models scored, what it decided."""

    __tablename__ = "training_runs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """Chosen by whoever asked for the run; a redelivered message carries the same id."""
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    """manual, schedule or drift."""
    status: Mapped[str] = mapped_column(String(16))
    """queued, running, promoted, kept (candidate stays challenger), skipped, rejected_data or failed."""
    reason: Mapped[str] = mapped_column(String(1000), default="")
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    candidate_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    imports: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    """The imports whose rows it trained on."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DriftReport(Base):
    """One drift check of a model version: recent inputs against its reference sample."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(32))
    """ok, drift, insufficient_data or no_reference."""
    drifted: Mapped[bool] = mapped_column(default=False)
    drifted_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    reference_rows: Mapped[int] = mapped_column(Integer)
    window_rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class BulkJob(Base):
    """A batch job: one file scored in chunks on the bulk queue (app/bulk.py, workers/bulk.py)."""

    __tablename__ = "bulk_jobs"

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


class ApiKey(Base):
    """A client's API key. Only its sha256 is stored; the token is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, pool_size: int = 32) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so API and workers share it.

    PostgreSQL: no pre-ping (it costs a round trip per checkout; a dead connection raises
    once, the pool is invalidated, and the request answers 503), and a pool as large as
    the threads that use it, so connections are reused instead of reopened.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_json_dumps)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 4,
        pool_recycle=1800,
        # Job inputs and outputs are JSON columns written on every request and batch.
        json_serializer=_json_dumps,
    )
