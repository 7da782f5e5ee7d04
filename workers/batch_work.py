"""One batch's work as it goes through the worker's steps, and what its jobs get.

``BatchWork`` carries a batch from claim to publish (workers/batching.py runs the steps);
``job_results`` turns each item's outputs or error into the result its job records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

import numpy as np

from app.errors import PredqError
from app.predictions.items import QueuedRows
from app.predictions.view import JobStatus


class BatchStatus(StrEnum):
    """How a batch ended (the ``batches.status`` column for the first three)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTLY_FAILED = "partly_failed"  # some jobs failed (rows the model refused), others not
    EMPTY = "empty"  # nothing was waiting
    DUPLICATE = "duplicate"  # every job popped was answered already (re-queued twice)


#: The statuses of batches that called the model.
RAN = (BatchStatus.SUCCEEDED, BatchStatus.FAILED, BatchStatus.PARTLY_FAILED)


@dataclass
class BatchWork:
    """One batch on its way through run_batch's steps: claim, predict, store, publish."""

    name: str
    version: int
    id: uuid.UUID
    started_at: datetime
    items: list[QueuedRows]
    """The served jobs this batch answers: claimed, or deferred (no row yet)."""
    shadows: list[QueuedRows]
    """Rows of jobs another version serves, scored for comparison: never answered."""
    keys: list[str] = field(default_factory=list)
    """The served rows' cache keys, in the items' order (none when the cache is off)."""
    outcomes: list[list[Any] | Exception] = field(default_factory=list)
    """Per served item: its outputs, or the error that failed it."""
    shadow_outcomes: list[list[Any] | Exception] = field(default_factory=list)
    inference_seconds: float = 0.0
    backend: str = "sklearn"
    """What answered the model call: sklearn, or the version's compiled backend (onnxruntime)."""
    not_written: set[str] = field(default_factory=set)
    """Jobs whose rows had ended otherwise meanwhile (cancelled, expired, answered by another
    worker): this batch's answer is neither announced nor handed to pollers."""

    @cached_property
    def rows(self) -> list[list[float]]:
        return [row for item in self.items for row in item.rows]

    @cached_property
    def shadow_rows(self) -> list[list[float]]:
        return [row for item in self.shadows for row in item.rows]

    def matrix(self) -> np.ndarray:
        """Every row of the batch, served then shadows, as the model's float64 matrix; a
        many-row request's rows came as a matrix already (app/predictions/items.py)."""
        items = [*self.items, *self.shadows]
        if all(isinstance(item.rows, list) for item in items):
            return np.asarray(self.rows + self.shadow_rows, dtype=np.float64)
        return np.concatenate([np.asarray(item.rows, dtype=np.float64) for item in items])


def batch_status(results: list[dict[str, Any]]) -> BatchStatus:
    failed = sum(result["status"] == JobStatus.FAILED for result in results)
    if not failed:
        return BatchStatus.SUCCEEDED
    return BatchStatus.FAILED if failed == len(results) else BatchStatus.PARTLY_FAILED


def job_results(items: list[QueuedRows], outcomes: list[list[Any] | Exception]) -> list[dict[str, Any]]:
    """Each job's result: its outputs (with those the cache answered at submit), or its error."""
    results: list[dict[str, Any]] = []
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
            for cached_slot, output in (item.pre or {}).items():
                job_outputs[int(cached_slot)] = output
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
