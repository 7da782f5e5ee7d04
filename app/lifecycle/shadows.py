"""Shadow comparisons: what a model's shadow version answered beside what served the same
jobs. A traffic policy's ``shadow`` (app/registry/traffic.py) sends the version the rows;
comparing the answers is an operation on served jobs, like the A/B report (feedback.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine

from app.db import Job, ShadowOutput
from app.db.ids import by_ids
from app.predictions.view import JobStatus
from app.registry.registry import Registry


def shadow_comparisons(engine: Engine, registry: Registry, name: str, limit: int = 50) -> dict[str, Any]:
    """The newest shadow outputs of a model beside what served the same jobs, and how often they agree."""
    registry.require(name)
    with engine.connect() as conn:
        rows = _newest_compared(conn, name, limit)
    pairs, agreeing, compared = [], 0, 0
    for shadow, served in rows:
        for served_output, shadow_output in zip(served.outputs, shadow.outputs, strict=True):
            compared += 1
            agreeing += served_output["prediction"] == shadow_output["prediction"]
        pairs.append(
            {
                "job_id": str(shadow.job_id),
                "served": {"version": served.model_version, "outputs": served.outputs},
                "shadow": {"version": shadow.model_version, "outputs": shadow.outputs},
            }
        )
    agreement = agreeing / compared if compared else None
    return {"model": name, "rows_compared": compared, "prediction_agreement": agreement, "jobs": pairs}


def _newest_compared(conn: Connection, name: str, limit: int) -> list[tuple[Any, Any]]:
    """The newest ``limit`` shadow outputs of ``name`` whose job succeeded, each with that job.

    Two reads, not one join: PostgreSQL cannot prune ``jobs``' day partitions on a join's
    column, so a join on the job's id probed every day's index for every shadow output. The
    shadow outputs are read first, a page of ``limit`` at a time (newest first, as far as it
    takes to find ``limit`` succeeded jobs), then their jobs with the days their ids name
    (app/db/ids.py): only those days' partitions are read (every one for a job id from
    before UUIDv7, as for any read by such an id).
    """
    page = (
        select(ShadowOutput.id, ShadowOutput.job_id, ShadowOutput.model_version, ShadowOutput.outputs)
        .where(ShadowOutput.model_name == name)
        .order_by(ShadowOutput.id.desc())
        .limit(limit)
    )
    compared: list[tuple[Any, Any]] = []
    while len(compared) < limit:
        shadows = conn.execute(page).all()
        if not shadows:
            break
        jobs = select(Job.id, Job.model_version, Job.outputs).where(
            by_ids(Job, [shadow.job_id for shadow in shadows]), Job.status == JobStatus.SUCCEEDED
        )
        served = {job.id: job for job in conn.execute(jobs)}
        compared += [(shadow, served[shadow.job_id]) for shadow in shadows if shadow.job_id in served]
        if len(shadows) < limit:
            break
        page = page.where(ShadowOutput.id < shadows[-1].id)
    return compared[:limit]
