"""What both of a submit's roads share: the routed, validated request, what Redis holds
for its rows, and the job row built from it (app/predictions/submit.py routes and validates)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import Connection

from app.db import Job, dialect_insert
from app.errors import Overloaded
from app.predictions.view import JobStatus

if TYPE_CHECKING:
    from app.access.ratelimit import RateCharge
    from app.registry import traffic


@dataclass(frozen=True)
class Submission:
    """A routed, validated request: what either road needs to take it on."""

    name: str
    version: int
    rows: list[list[float]] | np.ndarray
    """The rows in the model's feature order (a request of many rows: its float64 matrix)."""
    keys: list[str]
    """The rows' cache keys (none when the cache is off)."""
    request_id: str | None
    owner: int | None
    """The submitting API key's id (None with auth off)."""
    explain: str | None
    rate: RateCharge | None
    wait: float
    idempotency_key: str | None = None
    """The client's Idempotency-Key, as sent (None: none sent)."""
    stored_key: str | None = None
    """The Idempotency-Key as stored: its API key's own."""
    request_hash: str | None = None
    shadow: traffic.Route | None = None
    """The version the model's policy shadows, if any: it scores the same rows apart."""
    classes: list[str] | None = None
    """The served version's class names as strings (None: a regressor): cached outputs name them."""
    priority: str = "normal"
    """high, normal or low: the row queue it waits on (app/predictions/queue.py)."""
    deadline_ms: int | None = None
    """Not started this long after it is stored, the job expires (app/predictions/ending.py)."""
    callback_url: str | None = None
    """Where the job's end is announced (a webhook; such a job takes the stored road)."""

    def deadline(self, created_at: datetime) -> datetime | None:
        return created_at + timedelta(milliseconds=self.deadline_ms) if self.deadline_ms else None


class Peek(NamedTuple):
    """What Redis holds for a submit's rows: their cached outputs (None where missing) and
    how many jobs wait on the model version's queue."""

    cached: list[Any]
    queued_jobs: int


def job_record(
    job_id: uuid.UUID,
    name: str,
    version: int,
    rows: list[list[float]] | np.ndarray,
    cached: list[Any],
    *,
    request_hash: str | None = None,
    created_at: datetime,
    owner: int | None,
    explain: str | None = None,
    priority: str = "normal",
    deadline: datetime | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """A new job's row: finished already when every row's output was cached, else queued.

    ``explain`` is kept so that a job the sweeper queues again is explained all the same.
    """
    all_cached = all(c is not None for c in cached)
    return {
        "id": job_id,
        "model_name": name,
        "model_version": version,
        "status": JobStatus.SUCCEEDED if all_cached else JobStatus.QUEUED,
        "n_rows": len(rows),
        "inputs": rows,
        "outputs": cached if all_cached else None,
        "request_hash": request_hash,
        "cached_rows": sum(c is not None for c in cached),
        "owner_key_id": owner,
        "explain": explain,
        "priority": priority,
        "deadline": deadline,
        "callback_url": callback_url,
        "created_at": created_at,
        "completed_at": created_at if all_cached else None,
    }


def insert_if_absent(conn: Connection, records: list[dict[str, Any]]) -> int:
    """Insert job rows whose id is not stored yet; returns how many were inserted.

    No conflict target: on PostgreSQL the key is (id, created_at), and a job's created_at is
    its id's time, so a conflict on either is the same job."""
    return conn.execute(dialect_insert(conn)(Job).on_conflict_do_nothing(), records).rowcount


def overloaded(name: str, version: int, queued_jobs: int) -> Overloaded:
    # Backpressure: refuse before storing anything, so the client can retry elsewhere or later.
    return Overloaded(
        f"model {name!r} v{version} has {queued_jobs} jobs waiting; retry shortly",
        retry_after=2,
        model=name,
        version=version,
        queued_jobs=queued_jobs,
    )
