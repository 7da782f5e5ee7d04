"""Warm pool processes: each loads the versions aliases point at before its first batch or
chunk, and again after a promotion, so no request or batch job pays for a model's load
(a 100-tree forest: ~0.5 s per process; a compiled version's session: ~0.3 s more).

Started in every pool process (workers/main.py) as a daemon thread that looks every
WARM_INTERVAL_SECONDS: one query for the aliases, and a load only for what changed, within the
memory budget (app/registry/memory.py). Each look also tells Redis which versions this process
holds (app/registry/held.py).
"""

from __future__ import annotations

import logging
import threading
import time

from app.registry import held
from app.registry import pools as registry_pools
from app.services import Services
from workers import bulk_files

log = logging.getLogger(__name__)


def warm(
    svc: Services, failed: set[tuple[str, int]] | None = None, pools: list[str] | None = None
) -> list[tuple[str, int]]:
    """Load every serving version this process does not hold yet; returns what it loaded.
    With ``pools`` (an online worker's), only the versions of models in those worker pools.

    A version that cannot be loaded (its artifact changed, say) is left to its own batches,
    which fail as they always did; with ``failed`` it is tried (and logged) once.
    """
    memory = svc.registry.memory
    done = []
    # Only what this process does not hold: one query a look, however many models there are.
    # (A held version's newer compile record is picked up by its next batch, as before.)
    # Within the memory budget: a load may push out a version no longer in service, never
    # one that is (those beyond the budget load on demand); one too big to keep is left to demand.
    serving = svc.registry.in_service_versions()
    if pools:  # one query: the models of this worker's pools
        mine = registry_pools.models_in(svc.engine, pools)
        serving = {(name, version) for name, version in serving if name in mine}
    for name, version in sorted(serving):
        held = set(memory.keys())
        if (name, version) in held or (failed is not None and (name, version) in failed):
            continue
        if (name, version) in memory.oversized:
            continue
        if memory.full() and held <= serving:
            break
        try:
            svc.registry.loaded(name, version)
        except Exception as exc:
            log.warning("could not warm %s v%s: %s", name, version, exc)
            if failed is not None:
                failed.add((name, version))
            continue
        done.append((name, version))
    if done:
        log.info("warmed %s", ", ".join(f"{name} v{version}" for name, version in done))
    return done


#: How often a process that does not warm (WARM_INTERVAL_SECONDS=0) still reports what it holds.
REPORT_SECONDS = 5.0


def start(svc: Services, pools: list[str] | None = None, files: bool = False) -> threading.Thread:
    """Warm now and every WARM_INTERVAL_SECONDS in a daemon thread (0: no warming); each look
    (every REPORT_SECONDS without warming) reports what this process holds and the worker
    ``pools`` it serves. With ``files`` (a bulk worker's process), the first look also runs a
    tiny chunk's file work (workers/bulk_files.py ``warm_up``): the first chunk after a start
    then pays for neither the model's load nor pyarrow's first use."""
    warming = svc.settings.warm_interval_seconds > 0
    interval = svc.settings.warm_interval_seconds if warming else REPORT_SECONDS
    failed: set[tuple[str, int]] = set()
    reported: set[tuple[str, int]] = set()

    def loop() -> None:
        if files:
            try:
                bulk_files.warm_up()
            except Exception as exc:  # only time is lost: the first chunk pays instead
                log.warning("could not warm the batch-job file path: %s", exc)
        while True:
            try:
                if warming:
                    warm(svc, failed, pools)
            except Exception as exc:  # the database is away: try again next time
                log.warning("warming failed: %s", exc)
            try:  # which versions this process holds, for "loaded on N processes" (app/registry/held.py)
                now = set(svc.registry.loaded_versions())
                held.report(svc.redis, now, reported - now, interval, pools or [])
                reported.clear()
                reported.update(now)
            except Exception as exc:
                log.warning("could not report loaded versions: %s", exc)
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="predq-warm", daemon=True)
    thread.start()
    return thread
