"""Where a batch job's seconds go (bench.bulk): the client's clock for what it sees (the upload's
answer, the finished job, the download), the job's and its chunks' rows for the rest (when
each chunk started and ended on a bulk worker, when the merge ended).

Phases, from the moment the upload starts:

- ``upload``: until ``POST /batch-jobs`` answers (spool, check and rewrite of the whole file;
  chunks are already scored meanwhile, ``before_answer`` of them started);
- ``first_chunk``: until the first chunk started on a bulk worker;
- ``scoring``: first chunk's start to the last chunk's end, with ``cores_busy`` the chunks'
  own seconds (read, score, write the part) over that span: 2.0 is both bulk processes busy
  all along;
- ``merge``: the last chunk's end to the job's end (the parts merged into the result);
- ``noticed``: until the client's poll saw it finished; ``download``: the result fetched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text


def phases(
    engine: Any, job_id: str, start: datetime, answered: datetime, seen: datetime, end: datetime
) -> dict[str, float]:
    """The job's phases in seconds (wall-clock datetimes in UTC from the client)."""
    with engine.connect() as conn:
        job = conn.execute(text("SELECT completed_at FROM bulk_jobs WHERE id = :id"), {"id": job_id}).one()
        chunks = conn.execute(
            text("SELECT started_at, completed_at, seconds FROM bulk_chunks WHERE job_id = :id"),
            {"id": job_id},
        ).all()
    first = min(_utc(c.started_at) for c in chunks)
    last = max(_utc(c.completed_at) for c in chunks)
    span = (last - first).total_seconds()
    return {
        "upload": (answered - start).total_seconds(),
        "before_answer": float(sum(_utc(c.started_at) < answered for c in chunks)),
        "first_chunk": (first - start).total_seconds(),
        "scoring": span,
        "cores_busy": sum(c.seconds for c in chunks) / span if span > 0 else 0.0,
        "merge": (_utc(job.completed_at) - last).total_seconds(),
        "noticed": (seen - _utc(job.completed_at)).total_seconds(),
        "download": (end - seen).total_seconds(),
        "total": (end - start).total_seconds(),
    }


def line(p: dict[str, float]) -> str:
    return (
        f"upload+check+rewrite {p['upload']:.2f} s ({p['before_answer']:.0f} chunks started before its"
        f" answer; first chunk at {p['first_chunk']:.2f} s) | scoring {p['scoring']:.2f} s"
        f" ({p['cores_busy']:.2f} cores busy) | merge {p['merge']:.2f} | noticed {p['noticed']:.2f}"
        f" | download {p['download']:.2f} | total {p['total']:.2f}"
    )


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
