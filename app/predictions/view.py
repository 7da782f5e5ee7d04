"""A prediction job's status and its public view: what the API answers and workers publish.

Shared by both sides: the API builds the view of a job it stores or reads, a worker the
view of a job it finished (handed to pollers through Redis, see app/predictions/queue.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Where a job is in its life (the ``jobs.status`` column and the view's ``status``).

    More may come: clients read the view's ``done``, not this list (README, the contract).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    """Not started before its deadline: never run (error code ``deadline_exceeded``)."""
    CANCELLED = "cancelled"
    """Cancelled while queued: never run (error code ``cancelled``)."""


#: A job in one of these is done: it has its answer (outputs, or the error that ended it)
#: and never changes again.
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED)

#: Done without running: no worker took the job, and none ever will (app/predictions/ending.py).
NEVER_RUN = (JobStatus.EXPIRED, JobStatus.CANCELLED)


def job_view(row: Any) -> dict[str, Any]:
    """The public JSON of a job (DESIGN.md §3), from a jobs row or its dict."""
    finished = row["status"] in FINISHED
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "done": finished,
        "model": {"name": row["model_name"], "version": row["model_version"]},
        "outputs": row["outputs"] if finished else None,
        "error": row.get("error"),
        "priority": row.get("priority") or "normal",
        "deadline": _iso(row.get("deadline")),
        "created_at": _iso(row["created_at"]),
        "completed_at": _iso(row.get("completed_at")),
        "webhook": webhook_view(row.get("callback_url"), finished),
    }


def webhook_view(callback_url: str | None, finished: bool) -> dict[str, Any] | None:
    """The job's callback as a view first shows it (app/predictions/jobs.py reads its delivery's state)."""
    if not callback_url:
        return None
    state = "pending" if finished else "waiting"
    return {"url": callback_url, "state": state, "attempts": 0, "last_status_code": None}


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
