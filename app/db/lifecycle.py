"""The tables of a model's life after registration: feedback, the aliases' audit trail,
training data and runs, evaluation sets and drift reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


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
    status: Mapped[str] = mapped_column(String(16), default="accepted", server_default="accepted")
    """accepted (trained on), or quarantined: its labels failed the serving version's check
    (app/lifecycle/label_check.py), so it is neither trained on nor carved until accepted."""
    reason: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    """Why it was quarantined (the figures are in checks["labels"])."""
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Who accepted it after quarantine; None when it passed its check."""
    evaluation_set: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The version of the model's evaluation set carved from it, if one was."""


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
    quarantined_imports: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    """The model's quarantined imports, left out of this run."""
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
