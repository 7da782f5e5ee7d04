"""gunicorn settings, read by `gunicorn 'app:create_app()'` from the working directory.

Threads, not just processes: a `?wait=S` long-poll holds a thread while it waits.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Longer than the longest long-poll (30 s) so gunicorn never kills a waiting request.
timeout = 60
graceful_timeout = 10
accesslog = "-" if os.environ.get("ACCESS_LOG", "1") == "1" else None
