"""Which processes hold a version loaded, and which serve a worker pool: what ``GET
/v1/models/{name}`` and the card show as ``loaded_on``, and ``/readyz`` and ``predq_pool_workers``
as a pool's workers; written by each worker pool process and read by the API.

Stored in Redis, one hash per version and one per pool::

    predq:held:<name>:<version>   field "<host>:<pid>"  value "<unix time the claim holds until>"
    predq:held-pool:<pool>        field "<host>:<pid>"  value "<unix time the claim holds until>"

A worker pool process writes a field for every version it holds each time its warming loop
looks (every WARM_INTERVAL_SECONDS), valid for :func:`claim_seconds` of that, deletes the
fields of versions it dropped since, and sets the key to expire with its newest claim. A reader
counts the fields still valid, so a process that died stops counting within that time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PREFIX = "predq:held:"
POOL_PREFIX = "predq:held-pool:"


def key(name: str, version: int) -> str:
    return f"{PREFIX}{name}:{version}"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_seconds(interval: float) -> float:
    """How long a claim holds: three looks of the warming loop, at least 15 s."""
    return max(15.0, 3 * interval)


def report(
    redis: Redis,
    held: Iterable[tuple[str, int]],
    dropped: Iterable[tuple[str, int]],
    interval: float,
    pools: Iterable[str] = (),
) -> None:
    """Claim ``held`` and ``pools`` for this process and withdraw its claims on ``dropped``, in one
    round trip."""
    me, seconds = this_process(), claim_seconds(interval)
    until = time.time() + seconds
    keys = [key(name, version) for name, version in held] + [POOL_PREFIX + pool for pool in pools]
    with redis.pipeline(transaction=False) as pipe:
        for claimed in keys:
            pipe.hset(claimed, me, f"{until:.3f}")
            pipe.expire(claimed, int(seconds) + 1)
        for name, version in dropped:
            pipe.hdel(key(name, version), me)
        pipe.execute()


def holders(redis: Redis, name: str, versions: list[int]) -> dict[int, int]:
    """How many processes hold each of ``versions`` of ``name`` now (claims still valid)."""
    return dict(zip(versions, _valid(redis, [key(name, version) for version in versions]), strict=True))


def pool_workers(redis: Redis, pools: list[str]) -> dict[str, int]:
    """How many worker processes serve each of ``pools`` now (claims still valid)."""
    return dict(zip(pools, _valid(redis, [POOL_PREFIX + pool for pool in pools]), strict=True))


def _valid(redis: Redis, keys: list[str]) -> list[int]:
    with redis.pipeline(transaction=False) as pipe:
        for claimed in keys:
            pipe.hvals(claimed)
        found = pipe.execute()
    now = time.time()
    return [sum(1 for until in claims if float(until) > now) for claims in found]


def holders_or_none(redis: Redis, name: str, versions: list[int]) -> dict[int, int] | None:
    """:func:`holders`, or None when Redis does not answer (a model's description still does)."""
    try:
        return holders(redis, name, versions)
    except RedisError as exc:
        log.warning("could not count the processes holding %s: %s", name, exc)
        return None
