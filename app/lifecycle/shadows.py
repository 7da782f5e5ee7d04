"""Shadow comparisons: what a model's shadow version answered beside what served the same
jobs. A traffic policy's ``shadow`` (app/registry/traffic.py) sends the version the rows;
comparing the answers is an operation on served jobs, like the A/B report (feedback.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.db import Job, ShadowOutput
from app.predictions.view import JobStatus
from app.registry.registry import Registry


def shadow_comparisons(engine: Engine, registry: Registry, name: str, limit: int = 50) -> dict[str, Any]:
    """The newest shadow outputs of a model beside what served the same jobs, and how often they agree."""
    registry.require(name)
    with engine.connect() as conn:
        rows = conn.execute(
            select(ShadowOutput.job_id, ShadowOutput.model_version, ShadowOutput.outputs,
                   Job.model_version.label("served_version"), Job.outputs.label("served_outputs"))
            .join(Job, Job.id == ShadowOutput.job_id)
            .where(ShadowOutput.model_name == name, Job.status == JobStatus.SUCCEEDED)
            .order_by(ShadowOutput.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
    pairs, agreeing, compared = [], 0, 0
    for row in rows:
        for served, shadow in zip(row.served_outputs, row.outputs, strict=True):
            compared += 1
            agreeing += served["prediction"] == shadow["prediction"]
        pairs.append(
            {
                "job_id": str(row.job_id),
                "served": {"version": row.served_version, "outputs": row.served_outputs},
                "shadow": {"version": row.model_version, "outputs": row.outputs},
            }
        )
    agreement = agreeing / compared if compared else None
    return {"model": name, "rows_compared": compared, "prediction_agreement": agreement, "jobs": pairs}
