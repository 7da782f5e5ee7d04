"""gunicorn settings, read by `gunicorn 'app:create_app()'` from the working directory.

BIND is the listen address (compose sets 0.0.0.0:8000).

Threads, not just processes: a `?wait=S` long-poll holds a thread while it waits.
"""

import os

from app.multiproc import use_multiprocess_metrics

# Before the app (and prometheus_client) is imported in the worker processes.
use_multiprocess_metrics("api")

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Longer than the longest long-poll (30 s) so gunicorn never kills a waiting request.
timeout = 60
graceful_timeout = 10
accesslog = "-" if os.environ.get("ACCESS_LOG", "1") == "1" else None


def child_exit(server, worker):  # noqa: ANN001, ANN201  (gunicorn's hook signature)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
