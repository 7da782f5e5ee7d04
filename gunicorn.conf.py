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
threads = int(os.environ.get("API_THREADS") or os.environ.get("GUNICORN_THREADS") or "32")
# Longer than the longest long-poll (30 s) so gunicorn never kills a waiting request.
timeout = 60
graceful_timeout = 10
# Longer than gunicorn's 2 s default, so clients that pause between requests (a loaded
# machine, a load balancer's pool) less often race the server closing an idle connection.
keepalive = 5
# predq logs one JSON line per request itself (with request and job ids); gunicorn's
# access log would repeat it in another format, so it is off unless ACCESS_LOG=1.
_access_log = os.environ.get("ACCESS_LOG", "0") == "1"
accesslog = "-" if _access_log else None
_log_format = os.environ.get("LOG_FORMAT", "json")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"()": "app.logs.JsonLineFormatter"}
        if _log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stdout"}
    },
    "root": {"handlers": ["stdout"], "level": os.environ.get("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        # With logconfig_dict set gunicorn logs access lines whatever accesslog says;
        # the level is what keeps them off.
        "gunicorn.access": {
            "handlers": ["stdout"],
            "level": "INFO" if _access_log else "CRITICAL",
            "propagate": False,
        },
        # Alembic announces its plugins at INFO on import (the CLI is imported with the app).
        "alembic.runtime.plugins": {"level": "WARNING"},
    },
}


def on_starting(server):  # noqa: ANN001, ANN201  (gunicorn's hook signature)
    # Once per server, in the master: a warning if a queued row could be evicted.
    from app.config import Settings
    from app.redis_memory import check_at_start

    check_at_start(Settings.from_env())


def post_worker_init(worker):  # noqa: ANN001, ANN201  (gunicorn's hook signature)
    # The app is built: warm the batch-job file path, as app/wsgi.py does under granian (a
    # process's first upload would pay for pyarrow's first use), then keep full garbage
    # collections off its objects (see app/gcfreeze.py).
    from app.batch_jobs.warm_up import warm_up
    from app.gcfreeze import freeze_startup_objects

    warm_up()
    freeze_startup_objects()


def child_exit(server, worker):  # noqa: ANN001, ANN201  (gunicorn's hook signature)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
