"""`python -m app.serve`: the API under granian, a Rust HTTP server, running the Flask app over WSGI.

granian parses HTTP and manages connections in Rust; only the app's own work runs in
Python, so under the same processes and threads it serves more predictions than
gunicorn's gthread workers at less API CPU each (`python -m bench.servers`; the numbers
are in the README's Benchmark section).

``WEB_CONCURRENCY`` processes (default 2), each running requests on ``API_THREADS``
Python threads (default 32; a ``?wait=S`` long-poll holds one while it waits); ``BIND``
is the listen address. A worker process that dies is started again; SIGTERM or SIGINT
stops the server gracefully. gunicorn (``gunicorn 'app:create_app()'``, settings in
gunicorn.conf.py) still works and reads the same variables.
"""

from __future__ import annotations

import os
import sys

from app.logs import configure_logging
from app.multiproc import use_multiprocess_metrics

#: The WSGI callable the worker processes import (app/wsgi.py builds the app there).
TARGET = "app.wsgi:app"

# granian's own loggers hand their lines to the root logger, which speaks predq's format.
_GRANIAN_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {},
    "loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": True}},
}


def api_threads() -> int:
    """Request threads per API process (``API_THREADS``; gunicorn's ``GUNICORN_THREADS`` too)."""
    return int(os.environ.get("API_THREADS") or os.environ.get("GUNICORN_THREADS") or "32")


def main(target: str = TARGET) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    from app.config import Settings

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "json"))
    # Before the worker processes are forked: each one inherits the metrics directory.
    use_multiprocess_metrics("api")
    from app.redis_memory import check_at_start

    check_at_start(Settings.from_env())  # once per server: can a queued row be evicted?
    host, _, port = os.environ.get("BIND", "127.0.0.1:8000").rpartition(":")
    Granian(
        target,
        address=host,
        port=int(port),
        interface=Interfaces.WSGI,
        workers=int(os.environ.get("WEB_CONCURRENCY", "2")),
        blocking_threads=api_threads(),
        respawn_failed_workers=True,
        # As gunicorn's graceful timeout: requests in flight get this long at shutdown.
        workers_kill_timeout=10,
        # predq logs one line per request itself, with request and job ids.
        log_access=os.environ.get("ACCESS_LOG", "0") == "1",
        log_dictconfig=_GRANIAN_LOGGING,
    ).serve()


if __name__ == "__main__":
    main(*sys.argv[1:])
