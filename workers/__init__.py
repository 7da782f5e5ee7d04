"""Worker entry point: ``celery -A workers worker`` and ``celery -A workers beat``.

The Celery app is the one ``create_app()`` builds from the environment, as in Flask's
``examples/celery``; importing ``workers.tasks`` registers the tasks on it.
"""

from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_ready

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

from workers import tasks  # noqa: E402,F401  (registers the tasks on `celery`)


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # Each forked pool process opens its own database connections.
    flask_app.extensions["predq"].engine.dispose(close=False)


@worker_ready.connect
def _drain_leftovers(**_: object) -> None:
    # Rows queued while no worker ran (or whose task message was lost) start now, not
    # at the next sweep.
    try:
        tasks.sweeper.wake_workers(flask_app.extensions["predq"])
    except Exception:
        logging.getLogger(__name__).exception("could not wake workers for queued rows")
