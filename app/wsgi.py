"""The API as a WSGI callable, for the HTTP server's worker processes (``app.wsgi:app``).

Nothing imports this module but the server: importing it builds the app from the
environment and freezes the objects it made (app/gcfreeze.py).
"""

from __future__ import annotations

from app import create_app
from app.gcfreeze import freeze_startup_objects

app = create_app()
freeze_startup_objects()
