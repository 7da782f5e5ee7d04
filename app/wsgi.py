"""The API as a WSGI callable, for the HTTP server's worker processes (``app.wsgi:app``).

Nothing imports this module but the server: importing it builds the app from the
environment, warms the batch-job file path (a process's first upload would pay for pyarrow's
first use: app/batch_jobs/warm_up.py) and freezes the objects it made
(app/gcfreeze.py).
"""

from __future__ import annotations

from app import create_app
from app.batch_jobs.warm_up import warm_up
from app.gcfreeze import freeze_startup_objects

app = create_app()
warm_up()
freeze_startup_objects()
