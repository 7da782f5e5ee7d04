"""Celery tasks: each reaches its services through the Flask app's context (every task runs
in it, see app/celery_app.py) and calls one plain function."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task

from app.batch_jobs import intake
from app.celery_app import (
    CHECK_DRIFT,
    DELIVER_WEBHOOKS,
    RETRAIN,
    RUN_BATCH,
    RUN_EXPLAINED_BATCH,
    SCHEDULE_RETRAINS,
    SCORE_CHUNK,
    SWEEP,
)
from app.lifecycle import drift, training, training_runs
from app.services import current_services
from workers import batching, bulk, partitions, retention, sweeper, webhook_sender


@shared_task(name=RUN_BATCH, bind=True)
def run_batch(self: Task, model: str, version: int) -> dict[str, Any]:
    """Batches of queued rows for one model version until its queue is empty (Flower shows the summary)."""
    return batching.drain(current_services(), model, version, worker=self.request.hostname or "").as_dict()


@shared_task(name=RUN_EXPLAINED_BATCH, bind=True)
def run_explained_batch(self: Task, model: str, version: int) -> dict[str, Any]:
    """As run_batch, for the version's rows that asked for explanations (the bulk worker runs it)."""
    worker = self.request.hostname or ""
    return batching.drain(current_services(), model, version, worker=worker, explained=True).as_dict()


@shared_task(name=SWEEP)
def sweep() -> dict[str, int]:
    """Expire jobs past their deadline, re-queue stuck jobs, wake workers for non-empty queues,
    delete rows past retention."""
    svc = current_services()
    done = {
        # Before the re-queue: a job past its deadline ends expired, never queued again.
        "deadline_expired": sweeper.expire_overdue_jobs(svc),
        "requeued": sweeper.requeue_stuck_jobs(svc),
        "woken": sweeper.wake_workers(svc),
        "stale_training_runs": sweeper.fail_stale_training_runs(svc),
        "bulk_chunks_resent": bulk.requeue_stuck_chunks(svc),
        "bulk_jobs_expired": bulk.expire_old_batch_jobs(svc),
        "bulk_jobs_abandoned": intake.drop_abandoned(svc),
    }
    # Last: it may take up to RETENTION_BUDGET_SECONDS (workers/retention.py); then the day
    # partitions (PostgreSQL), after the keys older than a day to drop are gone.
    expired = retention.expire_all(svc)
    kept = partitions.maintain(svc)
    jobs = expired.pop("jobs")
    return done | {"expired": jobs} | {f"{table}_expired": n for table, n in expired.items()} | kept


@shared_task(name=SCORE_CHUNK)
def score_chunk(job_id: str, index: int, model: str = "", rows: int = 0) -> dict[str, Any]:
    """One chunk of a batch job (``model`` and ``rows`` ride along for Flower only)."""
    return bulk.score_chunk(current_services(), job_id, index)


@shared_task(name=CHECK_DRIFT)
def check_drift() -> dict[str, str]:
    """A drift report for every model's champion; returns each model's status."""
    svc = current_services()
    statuses = {}
    for model in svc.registry.list_models():
        try:
            statuses[model["name"]] = drift.check_model(svc, model["name"])["status"]
        except Exception:  # one model's failure must not stop the others' checks
            logging.getLogger(__name__).exception("drift check of %s failed", model["name"])
            statuses[model["name"]] = "error"
    return statuses


@shared_task(name=RETRAIN)
def retrain(model: str, run_id: str, trigger: str = "manual") -> dict[str, Any]:
    """One training run; the same run_id (a redelivered message) trains only once."""
    record = training.retrain(current_services(), model, uuid.UUID(run_id), trigger)
    return {"run": run_id, "status": record["status"], "candidate_version": record["candidate_version"]}


@shared_task(name=SCHEDULE_RETRAINS)
def schedule_retrains() -> list[str]:
    """Start a run for every model whose retrain schedule is due; returns their names."""
    return training_runs.start_due_runs(current_services())


@shared_task(name=DELIVER_WEBHOOKS)
def deliver_webhooks() -> dict[str, int]:
    """Send due deliveries (beat sends this every WEBHOOK_POLL_SECONDS; so does a batch that wrote some)."""
    return webhook_sender.deliver_due(current_services()).as_dict()
