"""The output cache and finished jobs' views: which Redis holds them, and why neither can
fail a submit or a batch.

Both may be lost at any time (a cached output is computed again, a view read from the
database), so they may live in a Redis that evicts (CACHE_REDIS_URL: ``maxmemory`` with
``allkeys-lru``), apart from the queues, which must never be evicted. Unset, they share
the queue's Redis, and a submit's cache lookup rides in the same call as its admission
(app/predictions/lua/admit.lua). Either way a cache write that Redis refuses (out of
memory, unreachable) is skipped and counted (``predq_cache_write_errors_total``), and a
lookup that fails is a miss: every row goes to a worker.

A request of up to ``ROWS_PER_KEY`` rows is cached row by row: a row sent again, in any
request, is answered from the cache. A larger one is cached whole, under one key (the hash
of all its rows) holding all its outputs: the same request sent again is answered at once,
for one lookup and one write instead of a thousand, whose hashing, packing and Redis time
came to half of what the model takes for those rows (README, Benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import OutOfMemoryError, RedisError

from app import throughput
from app.metrics import CACHE_WRITE_ERRORS
from app.predictions.items import decode_outputs, decode_whole, encode_output, encode_outputs
from app.predictions.queue import (
    DONE_TTL_SECONDS,
    LUA,
    Admission,
    RowQueue,
    cache_keys,
    done_key,
    result_key,
)

if TYPE_CHECKING:
    from app.access.ratelimit import RateCharge
    from app.services import Services

log = logging.getLogger(__name__)

# What it does: the top of its file (lua/, beside the row queue). Built once per process,
# as the row queue's scripts are.
_PUBLISH = Script(None, (LUA / "publish.lua").read_bytes())  # type: ignore[arg-type]  # a client comes per call


#: Most rows of a request cached row by row; a larger one is cached whole (the module docstring).
ROWS_PER_KEY = 100


def keys_for(name: str, version: int, matrix: np.ndarray, explained: str | None = None) -> list[str]:
    """The cache keys of one request's rows (``explained``: app/predictions/queue.py's kinds): a
    key per row, or one for them all when they are more than ROWS_PER_KEY."""
    return cache_keys(name, version, matrix, explained, whole=len(matrix) > ROWS_PER_KEY)


def n_keys(n_rows: int) -> int:
    """How many keys :func:`keys_for` gives a request of ``n_rows`` rows."""
    return 1 if n_rows > ROWS_PER_KEY else n_rows


def cached_outputs(values: list[bytes | None], classes: list[str] | None, n_rows: int) -> list[Any]:
    """A request's cached outputs (None where missing), from what its keys held."""
    if n_rows > ROWS_PER_KEY:
        return decode_whole(values[0] if values else None, classes, n_rows)
    return decode_outputs(values, classes)


def entries(keys: Sequence[str], outputs: list[Any]) -> dict[str, bytes]:
    """A request's outputs as the cache holds them under its keys (:func:`keys_for`)."""
    if len(keys) == 1 and len(outputs) > ROWS_PER_KEY:
        return {keys[0]: encode_outputs(outputs)}
    return {key: encode_output(output) for key, output in zip(keys, outputs, strict=True)}


def separate(svc: Services) -> bool:
    """True when the cache has a Redis of its own (CACHE_REDIS_URL)."""
    return svc.cache is not svc.redis


def admit(
    svc: Services,
    queue: RowQueue,
    item: bytes | None,
    keys: Sequence[str],
    max_queued: int = -1,
    rate: RateCharge | None = None,
) -> Admission:
    """:meth:`RowQueue.admit` with the rows' cached outputs looked up wherever the cache is.

    Sharing the queue's Redis, one call does both. With a cache of its own, the lookup
    comes first (a failed one finds nothing), then the queue's call, which pushes ``item``
    only when no row was cached: the outcomes are the same as one call's.
    """
    if not keys or not separate(svc):
        return queue.admit(item, keys, max_queued, rate)
    outputs = lookup(svc, keys)
    if any(output is not None for output in outputs):
        counted = queue.admit(None, (), max_queued, rate)
        return Admission("cached", counted.depth, outputs=outputs)
    admitted = queue.admit(item, (), max_queued, rate)
    if item is None:
        return Admission("looked", admitted.depth, outputs=outputs)
    return admitted


def lookup(svc: Services, keys: Sequence[str]) -> list[bytes | None]:
    """The cached outputs under ``keys`` (None where missing); all None when the cache fails."""
    try:
        return cast(list[bytes | None], svc.cache.mget(keys))
    except RedisError as exc:
        log.warning("output cache unreachable, computing every row: %s", exc)
        return [None] * len(keys)


def publish(
    svc: Services,
    cache: dict[str, bytes],
    views: dict[str, bytes],
    cache_ttl: int,
    result_ttl: int,
    counts: throughput.Increments | None = None,
) -> None:
    """A finished batch's done lists, result views and cached outputs, as one call per Redis,
    and ``counts``, its jobs in the minute's throughput counts (app/throughput.py), in the queue's.

    The done lists wake waiting callers: an error there is raised as before (the jobs are
    stored; long-polls fall back to reading them). The cache's writes are skipped when
    refused, and counted.
    """
    if not separate(svc):
        try:
            publish_results(svc.redis, cache, views, cache_ttl, result_ttl, counts=counts)
        except RedisError as exc:
            if not isinstance(exc, OutOfMemoryError):
                raise
            # Redis at its maxmemory with nothing it may evict (noeviction). The jobs are
            # stored; a waiting caller reads its job from the database when its wait ends.
            _skipped(len(cache) + len(views), exc)
        return
    publish_results(svc.redis, {}, views, cache_ttl, result_ttl, results=False, counts=counts)
    try:
        publish_results(svc.cache, cache, views, cache_ttl, result_ttl, done=False)
    except RedisError as exc:
        _skipped(len(cache) + len(views), exc)


def publish_results(
    redis: Redis,
    cache: dict[str, bytes],
    views: dict[str, bytes],
    cache_ttl: int,
    result_ttl: int,
    *,
    done: bool = True,
    results: bool = True,
    counts: throughput.Increments | None = None,
) -> None:
    """Hand finished jobs' views to pollers and store row outputs in the cache, in one round trip.

    ``cache`` maps cache keys to encoded outputs (empty when the cache is off); ``views``
    maps job ids to their public views, encoded with their owners by :func:`encode_view`.
    ``done``: push each view onto its job's done list (the queue's Redis); ``results``:
    store it under its result key (the cache's). :func:`publish` decides which Redis gets
    which, and what a refused write costs. ``counts``: added to app/throughput.py's hash.
    """
    keys = list(cache)
    for job_id in views:
        if results:
            keys.append(result_key(job_id))
        if done:
            keys.append(done_key(job_id))
    counts_key, fields = counts or ("", {})
    if fields:
        keys.append(counts_key)
    args: list[bytes | int | str] = [
        cache_ttl,
        result_ttl,
        DONE_TTL_SECONDS,
        len(cache),
        int(done),
        int(results),
        len(fields),
        throughput.KEEP_SECONDS,
        *(part for field, n in fields.items() for part in (field, n)),
        *cache.values(),
        *views.values(),
    ]
    _PUBLISH(keys=keys, args=args, client=redis)


def store_view(svc: Services, job_id: str, view: bytes) -> None:
    """A finished job's view under its result key, best effort (the database has the job)."""
    try:
        svc.cache.set(result_key(job_id), view, ex=svc.settings.result_ttl_seconds)
    except RedisError as exc:
        _skipped(1, exc)


def _skipped(writes: int, exc: RedisError) -> None:
    CACHE_WRITE_ERRORS.inc(writes)
    log.debug("%d cache writes skipped: %s", writes, exc)
