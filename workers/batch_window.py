"""How a worker takes a batch from a row queue: pop, and wait for it to fill only when more
rows are likely (the adaptive batch window; README, How it works); and how often it wakes
another worker for the rows it leaves behind."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from app.metrics import PUT_BACK_REFUSED
from app.predictions.items import QueuedRows, decode_item
from app.predictions.queue import RowQueue

log = logging.getLogger(__name__)


def collect(
    queue: RowQueue, max_rows: int, max_delay: float, linger: float = 0.0
) -> tuple[list[QueuedRows], int]:
    """Pop up to ``max_rows`` rows; wait ``max_delay`` for more only when more are likely.

    Returns the items and how many were left on the queue after the last pop. A queue
    found empty is held ``linger`` seconds more, then let go of: the next push wakes a
    worker.

    The adaptive window: a short first pop waits for a batch to fill only when this pop
    or this process's previous pop of the same queue found more than one request (callers
    overlap, so the next is a few milliseconds off). A lone request after a lone request
    runs at once: with one client the wait was a fixed ``max_delay`` added to every
    answer, and no one else was coming to share the model call.
    """
    items, left = queue.pop_batch(max_rows, release=linger <= 0)
    if not items and linger > 0:
        # Under light traffic the next row comes a few milliseconds later; waiting for it
        # here costs nothing, where letting go costs a Celery task (a message from the
        # API, a task start and finish in the worker) for every request.
        first = queue.wait_for_item(linger)
        # The item the wait took goes back to the head of its queue in the pop, so it meets
        # the pop's checks (cancelled, past its deadline, a higher priority first); whatever
        # else is already there rides along (the round trip LLEN cost before).
        try:
            items, left = queue.pop_batch(max_rows, release=first is None, put_back=first)
        except RedisError as exc:
            if first is None:
                raise
            return [_kept(first, exc)], 0
        if not items and first is not None:  # the item the wait took was not to be run
            items, left = queue.pop_batch(max_rows, release=True)
    if not items:
        return items, left
    count = sum(len(item.rows) for item in items)
    likely = len(items) > 1 or _LAST_POP.get(queue.key, 0) > 1
    if count < max_rows and max_delay > 0 and likely:
        # One wait and one more pop: polling every millisecond cost a Redis round trip each
        # time (~1 ms of a worker's CPU per batch) to end the wait early only when a batch
        # filled, which a first pop short of max_rows almost never sees within the delay.
        time.sleep(max_delay)
        more, left = queue.pop_batch(max_rows - count, top_up=True)
        items.extend(more)
    _LAST_POP[queue.key] = len(items)
    return items, left


def _kept(taken: tuple[str, bytes], exc: RedisError) -> QueuedRows:
    """The item a blocking wait took, when Redis refused the put-back (the pop's first write:
    out of memory under ``noeviction``, or gone). It is then in this process's memory only,
    so this worker runs it now, in a batch of its own, rather than retry a write Redis may go
    on refusing, or leave it for the sweeper (``STUCK_JOB_SECONDS`` later, and a waiting
    submit's job has no row until its wait ends). Nothing it skips matters: the claim
    (PostgreSQL) refuses a job cancelled, expired or answered meanwhile, and the batch checks
    its deadline; the wait took the highest priority waiting."""
    item = decode_item(taken[1])
    PUT_BACK_REFUSED.inc()
    log.warning(
        "Redis refused to take job %s back onto %s (%s): running it now, in a batch of its own",
        item.job_id, taken[0], exc,
    )  # fmt: skip
    return item


#: Requests the last pop of each queue found, in this process: the adaptive window's memory.
_LAST_POP: dict[str, int] = {}

#: While rows are left behind, this process wakes another worker for a queue at most this
#: often: under a steady backlog every pop leaves some, and a task per batch (sent, started,
#: finding the queue drained by then) cost more than the pop. This process keeps draining,
#: so no row waits on a wake-up; one a second still brings every idle process in.
WAKE_INTERVAL_SECONDS = 1.0
_LAST_WAKE: dict[tuple[str, int, bool], float] = {}


def may_wake(queue: tuple[str, int, bool]) -> bool:
    """Whether this process may wake another worker for ``queue`` (model, version, explained)
    now that a pop left rows behind; True counts as a wake-up."""
    now = time.monotonic()
    if now - _LAST_WAKE.get(queue, float("-inf")) < WAKE_INTERVAL_SECONDS:
        return False
    _LAST_WAKE[queue] = now
    return True
