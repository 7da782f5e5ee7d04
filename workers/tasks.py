"""Celery tasks: each loads its services and calls one plain function."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from app.celery_app import RUN_BATCH, SWEEP
from app.services import Services
from workers import batching, sweeper


def services() -> Services:
    from workers import flask_app  # the entry point module, imported before the tasks

    return flask_app.extensions["predq"]


@shared_task(name=RUN_BATCH, bind=True)
def run_batch(self: Task, model: str, version: int) -> dict[str, Any]:
    """One batch of queued rows for one model version (Flower shows the returned summary)."""
    return batching.run_batch(services(), model, version, worker=self.request.hostname or "").as_dict()


@shared_task(name=SWEEP)
def sweep() -> dict[str, int]:
    """Re-queue stuck jobs, wake workers for non-empty queues, delete jobs past retention."""
    svc = services()
    return {
        "requeued": sweeper.requeue_stuck_jobs(svc),
        "woken": sweeper.wake_workers(svc),
        "expired": sweeper.expire_old_jobs(svc),
    }
