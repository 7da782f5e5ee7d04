"""A prediction job's status and its public view: what the API answers and workers publish.

Shared by both sides: the API builds the view of a job it stores or reads, a worker the
view of a job it finished (handed to pollers through Redis, see app/predictions/queue.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Where a job is in its life (the ``jobs.status`` column and the view's ``status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: A job in one of these has its answer: outputs, or the error that failed it.
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def job_view(row: Any) -> dict[str, Any]:
    """The public JSON of a job (DESIGN.md §3), from a jobs row or its dict."""
    finished = row["status"] in FINISHED
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "model": {"name": row["model_name"], "version": row["model_version"]},
        "outputs": row["outputs"] if finished else None,
        "error": row.get("error"),
        "created_at": _iso(row["created_at"]),
        "completed_at": _iso(row.get("completed_at")),
    }


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
