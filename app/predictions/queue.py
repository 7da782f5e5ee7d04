"""The row queue: its Redis keys, its Lua scripts (``lua/`` beside this module), pushing an
item and waking a worker, shared by the API (push) and workers (pop). What an item or a
finished job's view holds is app/predictions/items.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from app.celery_app import batch_task
from app.db import PRIORITIES
from app.predictions.items import QueuedRows, decode_item
from app.registry import pools

if TYPE_CHECKING:
    from app.access.ratelimit import RateCharge
    from app.services import Services

log = logging.getLogger(__name__)

PREFIX = "predq"

# Rows whose explanations are asked for wait on lists of their own ("x" keys), taken by
# other workers (the bulk worker's, see app/celery_app.py): shap takes a thousand times
# the model's time on a deep forest, and plain predictions must not wait behind it.
# A version has a list per priority (PRIORITIES, highest first: the pop drains them in that
# order); normal rows keep the keys they had before priorities existed.
_PRIORITY_SUFFIX = {"high": "-high", "normal": "", "low": "-low"}
_QUEUE_PREFIXES = {
    (explained, priority): f"{PREFIX}:{'x' if explained else ''}queue{_PRIORITY_SUFFIX[priority]}:"
    for explained in (False, True)
    for priority in PRIORITIES
}

#: A cancelled job's mark (its id after this): the pop script drops the job's items unread.
CANCEL_PREFIX = f"{PREFIX}:cancelled:"


def queue_key(name: str, version: int, explained: bool = False, priority: str = "normal") -> str:
    return f"{_QUEUE_PREFIXES[explained, priority]}{name}:{version}"


def queue_keys(name: str, version: int, explained: bool = False) -> list[str]:
    """The version's row queues (of its explained rows), highest priority first."""
    return [queue_key(name, version, explained, priority) for priority in PRIORITIES]


def queued_versions(redis: Redis) -> list[tuple[str, int, bool]]:
    """(model, version, explained) of every version with a row queue that holds items.

    Redis deletes a list when its last item is popped, so every key found is non-empty.
    """
    found: dict[tuple[str, int, bool], None] = {}
    for (explained, _), prefix in _QUEUE_PREFIXES.items():
        for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            name, _, version = key.decode().removeprefix(prefix).rpartition(":")
            found[name, int(version), explained] = None
    return list(found)


def active_key(name: str, version: int, explained: bool = False) -> str:
    return f"{PREFIX}:{'xactive' if explained else 'active'}:{name}:{version}"


def result_key(job_id: str) -> str:
    return f"{PREFIX}:result:{job_id}"


def done_key(job_id: str) -> str:
    return f"{PREFIX}:done:{job_id}"


#: The cache key's kind by what the outputs hold: plain, or explained (predicted class, every class).
_CACHE_KINDS = {None: "cache", "predicted": "xcache", "all": "xallcache"}


def cache_keys(
    name: str, version: int, matrix: np.ndarray, explained: str | None = None, whole: bool = False
) -> list[str]:
    """One cache key per row (``whole``: one for all the rows, app/predictions/cache.py); the
    version is in the key, so a new version never reads old outputs.

    Explained outputs (``explained``: "predicted" or "all") have keys of their own, one
    kind each: a request without ``explain`` never reads them, and one with it never reads
    an output without its explanation (or, asking for every class, with only the predicted one).

    Rows are hashed as slices of the matrix's bytes, not as numpy rows: iterating a matrix
    makes an array per row, a third of the cost (README, Benchmark). The 128-bit digest is
    written in 22 characters of URL-safe base64, not 32 hex digits: every cached row holds
    its key, and Redis rounds a 51-byte key up to 64 bytes, a 41-byte one to 48.
    """
    prefix = f"{PREFIX}:{_CACHE_KINDS[explained]}:{name}:{version}:" + (f"{len(matrix)}x" if whole else "")
    data = memoryview(np.ascontiguousarray(matrix, dtype=np.float64).tobytes())
    width = len(data) if whole else 8 * matrix.shape[1]
    blake2b, b64 = hashlib.blake2b, base64.urlsafe_b64encode
    return [
        prefix + b64(blake2b(data[i : i + width], digest_size=16).digest())[:22].decode()
        for i in range(0, len(data), width)
    ]


#: The Lua scripts, a file each, its KEYS, ARGV and reply described at its top.
LUA = Path(__file__).parent / "lua"


def _script(file_name: str) -> Script:
    # Built once per process: redis-py's register_script hashes the source on every call,
    # and the queue scripts run several times per batch. Given bytes, Script needs no
    # client until it is called with one.
    return Script(None, (LUA / file_name).read_bytes())  # type: ignore[arg-type]  # a client comes per call


# A worker that is taking batches from a queue holds its "active" key; a push that finds
# the key absent sets it and tells the API to send a batch task. So under load the API
# sends no Celery message at all: the worker that holds the queue keeps taking batches.
# The key expires on its own (ACTIVE_TTL_SECONDS) if that worker dies or its task fails
# (say, the database is down: the expiry then spaces out retries instead of one failing
# task per push); the sweeper wakes a worker for any queue left non-empty.
ACTIVE_TTL_SECONDS = 10

# What each does: the top of its file (lua/, beside this module).
_ADMIT = _script("admit.lua")
_POP_BATCH = _script("pop_batch.lua")

# A waiting long-poll reads a job's done list for this long after the job finished.
DONE_TTL_SECONDS = 60


@dataclass(frozen=True)
class Admission:
    """What the submit script did with an item, by ``outcome``:

    - ``queued``: pushed; ``wake`` when no worker held the queue (the caller must wake one);
    - ``cached``: a row's output is cached, nothing pushed; ``outputs`` holds each key's
      encoded output (None where missing);
    - ``looked``: asked only to count and look (no item): ``outputs`` as for cached;
    - ``overloaded``: the version already holds the most jobs allowed, nothing pushed.

    ``depth`` is how many jobs the version's queues (every priority's) held before this call;
    -1 for a push made with no bound, which does not count them. A spent rate limit is not an
    outcome: ``admit`` raises RateLimited.
    """

    outcome: str
    depth: int = 0
    wake: bool = False
    outputs: list[bytes | None] = field(default_factory=list)


class RowQueue:
    """The Redis lists of pending rows for one model version (``explained``: of its explained
    rows), one per priority: ``push`` and ``admit`` add to ``priority``'s, pops take from all."""

    def __init__(
        self, redis: Redis, name: str, version: int, explained: bool = False, priority: str = "normal"
    ) -> None:
        self.redis = redis
        self.key = queue_key(name, version, explained, priority)
        self.keys = queue_keys(name, version, explained)
        self.others = [key for key in self.keys if key != self.key]
        """The version's other priorities' queues: ``admit`` counts them too."""
        self.active = active_key(name, version, explained)
        self.expired: list[QueuedRows] = []
        """Items the pops found past their deadline (never run): the caller ends their jobs."""

    def push(self, item: bytes) -> bool:
        """Append an item; True when no worker holds the queue, so the caller must wake one."""
        return self.admit(item).wake

    def admit(
        self,
        item: bytes | None,
        cache_keys: Sequence[str] = (),
        max_queued: int = -1,
        rate: RateCharge | None = None,
    ) -> Admission:
        """Count ``rate`` (if given), look up ``cache_keys`` and push ``item``, in one round trip.

        Nothing is pushed when a row is cached or the version holds ``max_queued`` jobs on
        its queues, every priority's together (-1: no bound); with ``item`` None nothing is
        pushed either (only counted and looked up).
        Raises RateLimited (nothing looked up or pushed) when one of ``rate``'s limits is spent.
        """
        counters, limit_args = rate.script_keys_and_args() if rate is not None else ([], [])
        reply = _ADMIT(
            keys=[self.key, self.active, *self.others, *counters, *cache_keys],
            args=[item or b"", ACTIVE_TTL_SECONDS, max_queued, len(counters), *limit_args],
            client=self.redis,
        )
        outcome = reply[0].decode()
        if outcome == "limited":
            raise rate.refused(int(reply[1]), int(reply[2]))  # type: ignore[union-attr]  # only with a rate
        depth = int(reply[1])
        if outcome in ("cached", "looked"):
            return Admission(outcome, depth, outputs=[value or None for value in reply[2:]])
        return Admission(outcome, depth, wake=outcome == "queued" and reply[2] == 1)

    def pop_batch(
        self,
        max_rows: int,
        release: bool = False,
        top_up: bool = False,
        put_back: tuple[str, bytes] | None = None,
    ) -> tuple[list[QueuedRows], int]:
        """Whole items holding up to ``max_rows`` rows, highest priority first, and how many
        items are left (on every priority's queue).

        A first item larger than ``max_rows`` is taken alone (it must go somewhere), unless
        the pop tops up a batch already begun (``top_up``): then nothing passes ``max_rows``.
        With ``release``, an empty queue is let go of (the next push wakes a worker).
        ``put_back`` (a queue key and an item a blocking wait took from its head) goes back
        first, so the item meets the same checks as any other. Items of cancelled jobs are
        dropped; items past their deadline are added to ``expired``.
        """
        key, item = put_back or ("", b"")
        left, n_expired, *raw = _POP_BATCH(
            keys=[self.active, *self.keys],
            args=[max_rows, int(release), ACTIVE_TTL_SECONDS, int(top_up), CANCEL_PREFIX,
                  item, self.keys.index(key) + 1 if key else 0],
            client=self.redis,
        )  # fmt: skip
        self.expired += [decode_item(expired) for expired in raw[: int(n_expired)]]
        return [decode_item(taken) for taken in raw[int(n_expired) :]], int(left)

    def wait_for_item(self, seconds: float) -> tuple[str, bytes] | None:
        """Block up to ``seconds`` for the next item (of the highest priority waiting): its
        queue's key and the item as it was, for ``pop_batch``'s ``put_back``. The caller keeps
        holding the queue."""
        popped = self.redis.blpop(self.keys, timeout=seconds)
        return (cast(bytes, popped[0]).decode(), cast(bytes, popped[1])) if popped else None

    def __len__(self) -> int:
        return sum(int(self.redis.llen(key)) for key in self.keys)


# -- pushing and waking ------------------------------------------------------------


def enqueue(
    svc: Services, name: str, version: int, item: bytes, *, explained: bool = False, priority: str = "normal"
) -> None:
    """Push rows and wake a worker when none holds the queue (no Celery message per request).

    ``explained``: the item asks for explanations, and goes to the version's explained rows;
    ``priority``: the queue it waits on.
    """
    try:
        woke = RowQueue(svc.redis, name, version, explained, priority).push(item)
    except RedisError as exc:
        # The job is committed; the sweeper re-queues it from the database.
        log.warning("could not queue job rows for %s v%s: %s", name, version, exc)
        return
    if woke:
        wake_worker(svc, name, version, explained=explained)


def wake_worker(svc: Services, name: str, version: int, *, explained: bool = False) -> None:
    """Send a batch task for the version's rows (``explained``: its explained rows); the one
    place predq sends it. A broker that cannot be reached is logged, not raised: the rows stay
    queued and the sweeper wakes a worker for every non-empty queue."""
    try:
        # Plain rows of a model in a pool go to its queue (app/registry/pools.py); the default
        # pool's and explained rows keep the routes of app/celery_app.py.
        pool = pools.DEFAULT_POOL if explained else svc.registry.pool(name)
        queue = None if pool == pools.DEFAULT_POOL else pools.queue_of(pool)
    except Exception as exc:  # the database is away: the sweeper wakes a worker later
        log.warning("could not look up %s's pool to wake a worker: %s", name, exc)
        return
    try:
        svc.celery.send_task(batch_task(explained), args=[name, version], queue=queue)
    except BrokerError as exc:
        log.warning("could not wake a worker for %s v%s: %s", name, version, exc)
