"""Keep the garbage collector's full passes off the objects a server process starts with.

An API or worker process holds ~250,000 objects once started (Flask, SQLAlchemy, Celery,
scikit-learn, the app itself), none of them garbage. A full collection walked them all:
160-450 ms on the benchmark machine, a stall of every thread in the process. In one 80 s
run at 64 clients the two API processes made three such passes (250-450 ms) and the load
generator two; each one delayed every request in flight on that process, which is what a
p99 is made of. ``gc.freeze()`` moves what exists into a permanent generation that
collections skip, and later objects are collected as before: after it, the API's full
collections took 7-53 ms."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then exempt every surviving object from later collections."""
    gc.collect()
    gc.freeze()
