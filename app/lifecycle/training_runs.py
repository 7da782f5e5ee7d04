"""Training runs as rows: queued by the API, beat or the CLI, claimed once by a worker,
finished with their decision (app/lifecycle/training.py trains), and retraining schedules.

A run id given twice trains once: a redelivered Celery message finds its run claimed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.celery_app import RETRAIN
from app.db import Model, TrainingRun, newest_rows, utcnow
from app.metrics import TRAINING_RUNS
from app.services import Services

log = logging.getLogger(__name__)


def finish(
    svc: Services, run_id: uuid.UUID, name: str, status: str, reason: str, **fields: Any
) -> dict[str, Any]:
    """Record the run's decision; ``quarantined_imports`` among ``fields`` are named in its reason."""
    left_out = fields.get("quarantined_imports")
    if left_out:
        ids = ", ".join(map(str, left_out[:20])) + (", ..." if len(left_out) > 20 else "")
        reason = (
            f"{reason}; left out quarantined import{'s' if len(left_out) > 1 else ''} {ids}"
            f" (see flask --app app models imports {name}; accept or drop)"
        )
    with svc.engine.begin() as conn:
        conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(status=status, reason=reason[:1000], completed_at=utcnow(), **fields)
        )
    TRAINING_RUNS.labels(name, status).inc()
    log.info(
        "training run %s of %s: %s: %s",
        run_id,
        name,
        status,
        reason,
        extra={"model": name, "run": str(run_id)},
    )
    return run_record(svc, run_id)


def start_run(svc: Services, name: str, trigger: str = "manual") -> uuid.UUID:
    """Record a queued run and send it to the training queue; returns its id.

    Recorded before it is sent, so a schedule looking again a moment later sees it.
    """
    svc.registry.resolve(name)  # 404 for an unknown model, before anything is queued
    run_id = uuid.uuid4()
    _record_queued(svc, run_id, name, trigger)
    svc.celery.send_task(RETRAIN, args=[name, str(run_id), trigger])
    return run_id


def _run_row(run_id: uuid.UUID, name: str, trigger: str, status: str) -> dict[str, Any]:
    return {"id": run_id, "model_name": name, "trigger": trigger, "status": status, "started_at": utcnow()}


def _record_queued(svc: Services, run_id: uuid.UUID, name: str, trigger: str) -> None:
    with svc.engine.begin() as conn:
        conn.execute(insert(TrainingRun), _run_row(run_id, name, trigger, "queued"))


def claim(svc: Services, run_id: uuid.UUID, name: str, trigger: str) -> bool:
    """Mark the run running; False when it already started (or finished).

    A run queued by :func:`start_run` is claimed by an UPDATE; one asked for directly (the
    CLI's --here) has no row yet and is inserted running. Either way exactly one caller wins.
    """
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
            .values(status="running", started_at=utcnow())
        ).rowcount
    if claimed:
        return True
    try:
        with svc.engine.begin() as conn:
            conn.execute(insert(TrainingRun), _run_row(run_id, name, trigger, "running"))
    except IntegrityError:
        return False  # the row exists and is past queued
    return True


def set_schedule(svc: Services, name: str, every_seconds: float | None, on_drift: bool) -> None:
    """Retrain NAME every ``every_seconds`` (None: never on a schedule) and/or when drift is found."""
    svc.registry.require(name)
    with svc.engine.begin() as conn:
        conn.execute(
            update(Model)
            .where(Model.name == name)
            .values(retrain_every_seconds=every_seconds, retrain_on_drift=on_drift)
        )


def start_due_runs(svc: Services) -> list[str]:
    """Queue a run for each model whose schedule is due (its newest run started longer ago)."""
    now = utcnow()
    newest = (
        select(TrainingRun.model_name, func.max(TrainingRun.started_at).label("last"))
        .group_by(TrainingRun.model_name)
        .subquery()
    )
    with svc.engine.connect() as conn:
        models = conn.execute(
            select(Model.name, Model.retrain_every_seconds, newest.c.last)
            .outerjoin(newest, newest.c.model_name == Model.name)
            .where(Model.retrain_every_seconds.is_not(None))
        ).all()
    due = []
    for name, every, last in models:
        if last is not None and last.tzinfo is None:  # SQLite gives naive UTC
            last = last.replace(tzinfo=now.tzinfo)
        if last is None or (now - last).total_seconds() >= every:
            start_run(svc, name, "schedule")
            due.append(name)
    return due


def run_record(svc: Services, run_id: uuid.UUID) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        row = conn.execute(select(TrainingRun.__table__).where(TrainingRun.id == run_id)).mappings().one()
    return dict(row)


def runs(svc: Services, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """A model's newest training runs, newest first."""
    svc.registry.require(name)
    return newest_rows(svc.engine, TrainingRun, name, TrainingRun.started_at, limit)
