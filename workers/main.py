"""The worker's entry point (as Flask's ``examples/celery`` has ``make_celery.py``): the
module ``celery -A workers.main worker`` and ``celery -A workers.main beat`` load, and
nothing else imports.

Importing it builds the app from the environment (``create_app()``), points
prometheus_client's multiprocess mode at the pool's shared directory, and connects the
worker's signal handlers; importing ``workers.tasks`` registers the tasks on its Celery app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import cast

from app.multiproc import use_multiprocess_metrics

# Before prometheus_client is imported: the pool's processes share this directory.
use_multiprocess_metrics("celery")

from celery.signals import (  # noqa: E402
    celeryd_init,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from app import create_app  # noqa: E402
from app.celery_app import BULK_QUEUE, EXPLAIN_QUEUE, INFERENCE_QUEUE  # noqa: E402
from app.redis_memory import check_at_start  # noqa: E402
from app.registry import pools  # noqa: E402

flask_app = create_app()
celery = flask_app.extensions["celery"]
# Worker, beat and Flower each say so at start if a queued row could be evicted (the CLI does not).
check_at_start(flask_app.extensions["predq"].settings)

from workers import sweeper, tasks  # noqa: E402,F401  (tasks registers the tasks on `celery`)


@setup_logging.connect
def _json_logs(**_: object) -> None:
    # Connected, so Celery leaves logging to us: the same JSON lines as the API.
    from app.logs import configure_logging

    settings = flask_app.extensions["predq"].settings
    configure_logging(settings.log_level, settings.log_format)


#: The worker pools (app/registry/pools.py) this worker's -Q serves, set before the pool forks.
SERVED_POOLS: list[str] = []
#: The queues this worker's -Q names (none: every queue the app lists), set before the pool forks.
SERVED_QUEUES: list[str] = []


def _queue_names(options: dict[str, object] | None) -> list[str]:
    queues = (options or {}).get("queues") or []
    return queues.split(",") if isinstance(queues, str) else [str(q) for q in cast(Iterable[object], queues)]


@celeryd_init.connect
def _remember_pools(options: dict[str, object] | None = None, **_: object) -> None:
    # Without -Q a worker takes every queue the app lists, the default pool's among them.
    names = _queue_names(options)
    found = {pools.pool_of_queue(q) for q in names or [INFERENCE_QUEUE]}
    SERVED_POOLS[:] = sorted(p for p in found if p is not None)
    SERVED_QUEUES[:] = names


@celeryd_init.connect
def _bulk_worker_yields_the_cpu(options: dict[str, object] | None = None, **_: object) -> None:
    # A worker that only scores files and explains rows (-Q bulk, or bulk,explain) runs
    # niced, its pool processes too (they inherit it): on shared cores the online batches
    # get the CPU first.
    names = _queue_names(options)
    nice = flask_app.extensions["predq"].settings.bulk_worker_nice
    if names and set(names) <= {BULK_QUEUE, EXPLAIN_QUEUE} and nice > 0:
        os.nice(nice)
        logging.getLogger(__name__).info("bulk worker: running at nice +%d", nice)


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # Each forked pool process opens its own database connections.
    flask_app.extensions["predq"].engine.dispose(close=False)


@worker_process_init.connect
def _freeze_startup_objects(**_: object) -> None:
    # Keep full garbage collections off what the process started with (app/gcfreeze.py).
    from app.gcfreeze import freeze_startup_objects

    freeze_startup_objects()


@worker_process_init.connect
def _warm_serving_versions(**_: object) -> None:
    # Each pool process loads the served versions before its first batch or chunk, and
    # after a promotion (workers/warming.py); in a thread, so the process is ready at once.
    # A bulk worker's also reads and writes a tiny file first (workers/bulk_files.py).
    from workers import warming

    scores_files = not SERVED_QUEUES or BULK_QUEUE in SERVED_QUEUES
    warming.start(flask_app.extensions["predq"], SERVED_POOLS, files=scores_files)


@worker_process_shutdown.connect
def _forget_live_gauges(pid: int | None = None, **_: object) -> None:
    # The memory budget's bytes gauge counts live processes only (multiprocess mode "livesum"):
    # a pool process that ends takes its share with it.
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@worker_ready.connect
def _serve_metrics(**_: object) -> None:
    # In the main process: it sums what the pool processes wrote (multiprocess mode).
    bind = flask_app.extensions["predq"].settings.worker_metrics_bind
    if not bind:
        return
    from prometheus_client import start_http_server

    from app.metrics import process_registry

    host, _, port = bind.rpartition(":")
    try:
        start_http_server(int(port), addr=host or "0.0.0.0", registry=process_registry())
    except OSError as exc:  # say, a second worker on this host: run without an exporter
        logging.getLogger(__name__).warning("worker metrics not served on %s: %s", bind, exc)
    else:
        logging.getLogger(__name__).info("worker metrics on http://%s/metrics", bind)


@worker_ready.connect
def _heartbeat(sender: object = None, **_: object) -> None:
    # In the main process: the console shows each worker's last beat (app/heartbeats.py).
    from app import heartbeats

    queues = sorted(getattr(celery.amqp.queues, "consume_from", None) or {})
    node = str(getattr(sender, "hostname", "") or f"celery@{os.uname().nodename}")
    heartbeats.start(flask_app.extensions["predq"].redis, node, queues)


@worker_ready.connect
def _drain_leftovers(**_: object) -> None:
    # Rows queued while no worker ran (or whose task message was lost) start now, not
    # at the next sweep.
    try:
        sweeper.wake_workers(flask_app.extensions["predq"])
    except Exception:
        logging.getLogger(__name__).exception("could not wake workers for queued rows")
