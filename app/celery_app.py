"""The Celery app, built from the same Settings as the Flask app (Flask's ``examples/celery``).

Every task runs inside the Flask app's context, so a task reaches its services through
``app.services.current_services()`` as a request does. The API only *sends* tasks (by
name); the worker entry point (``workers.main``) imports ``workers.tasks``, which
registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu.entity import Queue

from app.config import Settings

RUN_BATCH = "predq.run_batch"
RUN_EXPLAINED_BATCH = "predq.run_explained_batch"
SWEEP = "predq.sweep"
CHECK_DRIFT = "predq.check_drift"
RETRAIN = "predq.retrain"
SCHEDULE_RETRAINS = "predq.schedule_retrains"
SCORE_CHUNK = "predq.score_chunk"
DELIVER_WEBHOOKS = "predq.deliver_webhooks"
INFERENCE_QUEUE = "inference"
MAINTENANCE_QUEUE = "maintenance"
TRAINING_QUEUE = "training"
BULK_QUEUE = "bulk"
EXPLAIN_QUEUE = "explain"
WEBHOOKS_QUEUE = "webhooks"


def batch_task(explained: bool) -> str:
    """The task that drains a version's plain rows, or its explained rows (app/predictions/queue.py)."""
    return RUN_EXPLAINED_BATCH if explained else RUN_BATCH


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """The Celery app of ``app`` (kept in ``app.extensions``): its tasks run in ``app``'s context."""
    celery = make_celery(settings, app)
    app.extensions["celery"] = celery
    return celery


def make_celery(settings: Settings, app: Flask | None = None) -> Celery:
    """A Celery app configured from ``settings``; with ``app``, its tasks run in that app's context.

    Without one (a test that only sends tasks) a task run by it has no services to reach.
    """

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if app is None:
                return self.run(*args, **kwargs)
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery("predq", broker=settings.celery_broker_url, set_as_current=False, task_cls=FlaskTask)
    celery.conf.update(
        # A batch task is acknowledged only once its results are written; a worker that
        # dies mid-batch gets its message redelivered (and the sweeper re-queues its rows).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A new pool process has this long to say it is up. Celery's 4 s default killed bulk
        # pool processes starting on a loaded machine (imports alone took longer at load 30),
        # and each one started in its place met the same end.
        worker_proc_alive_timeout=30.0,
        # Longer than any batch, so Redis does not redeliver a task that is still running.
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        # Results go to the jobs table, not to a Celery result backend.
        task_ignore_result=True,
        # Flower needs task events to show what each batch did.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Without -Q a worker consumes every queue listed here.
        task_queues=[
            Queue(q)  # type: ignore[no-untyped-call]  # kombu's Queue is unannotated
            for q in (
                INFERENCE_QUEUE,
                MAINTENANCE_QUEUE,
                TRAINING_QUEUE,
                BULK_QUEUE,
                EXPLAIN_QUEUE,
                WEBHOOKS_QUEUE,
            )
        ],
        task_default_queue=INFERENCE_QUEUE,
        task_routes={
            RUN_BATCH: {"queue": INFERENCE_QUEUE},
            SWEEP: {"queue": MAINTENANCE_QUEUE},
            CHECK_DRIFT: {"queue": MAINTENANCE_QUEUE},
            SCHEDULE_RETRAINS: {"queue": MAINTENANCE_QUEUE},
            # Training has its own queue, so a long fit never delays batches or sweeps
            # (`-Q training` makes a worker that only trains).
            RETRAIN: {"queue": TRAINING_QUEUE},
            # Batch-job chunks have theirs, so online batches never wait behind bulk work
            # (`-Q bulk` makes a worker that only scores files; see app/processes.py).
            SCORE_CHUNK: {"queue": BULK_QUEUE},
            # Explained rows too (shap is slow on deep forests): the bulk worker takes them,
            # between chunks, and online batches never wait behind an explanation.
            RUN_EXPLAINED_BATCH: {"queue": EXPLAIN_QUEUE},
            # Webhooks wait on receivers' answers: a sender of their own, never a batch's worker.
            DELIVER_WEBHOOKS: {"queue": WEBHOOKS_QUEUE},
        },
        beat_schedule={
            "sweep-stuck-jobs": {
                "task": SWEEP,
                "schedule": settings.sweep_interval_seconds,
            },
            "check-drift": {
                "task": CHECK_DRIFT,
                "schedule": settings.drift_interval_seconds,
            },
            # Due webhook deliveries (retries included: their time is in the outbox, not in
            # Celery countdowns, which Redis redelivers every visibility_timeout).
            "deliver-webhooks": {
                "task": DELIVER_WEBHOOKS,
                "schedule": settings.webhook_poll_seconds,
                "options": {"expires": settings.webhook_poll_seconds},
            },
            # Each model's own schedule (models.retrain_every_seconds) is checked every minute.
            "schedule-retrains": {
                "task": SCHEDULE_RETRAINS,
                "schedule": 60.0,
            },
        },
        beat_schedule_filename=str(Path(settings.var_dir) / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
    )
    return celery
