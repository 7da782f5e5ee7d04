"""Finished jobs per model and minute, counted in small Redis hashes for the console's chart.

Format: one hash per minute, ``predq:throughput:<unix minute>``, fields ``<model>|ok`` and
``<model>|failed`` (jobs finished that minute), each hash expiring after
:data:`KEEP_SECONDS`. Written where jobs finish: a worker's batch in the same call that
publishes it (no round trip of its own), a submit answered from the cache in one pipelined
round trip; read for the last hour in another. Prometheus counts the same jobs for scrapers;
this is what a page can read without one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError

PREFIX = "predq:throughput:"
KEEP_SECONDS = 2 * 3600
OK, FAILED = "ok", "failed"


def _key(minute: int) -> str:
    return f"{PREFIX}{minute}"


Increments = tuple[str, dict[str, int]]


def increments(name: str, ok: int, failed: int = 0, at: float | None = None) -> Increments | None:
    """This minute's hash and what to add to its fields for ``ok`` succeeded and ``failed``
    failed jobs of model ``name`` (None when there is nothing to add). A worker's batch adds
    them in the call that publishes it (app/predictions/cache.py publish_results)."""
    if not ok and not failed:
        return None
    fields = {f"{name}|{OK}": ok, f"{name}|{FAILED}": failed}
    return _key(int((time.time() if at is None else at) // 60)), {f: n for f, n in fields.items() if n}


def count(redis: Redis, name: str, ok: int, failed: int = 0, at: float | None = None) -> None:
    """Add ``ok`` succeeded and ``failed`` failed jobs of model ``name`` to this minute's counts.

    A counter is an observation, never worth a failed batch: Redis errors are swallowed.
    """
    added = increments(name, ok, failed, at)
    if added is None:
        return
    key, fields = added
    try:
        with redis.pipeline(transaction=False) as pipe:
            for field, n in fields.items():
                pipe.hincrby(key, field, n)
            pipe.expire(key, KEEP_SECONDS)
            pipe.execute()
    except RedisError:
        pass


Minutes = list[tuple[int, dict[str, int]]]


def last_minutes(redis: Redis, minutes: int = 60, now: float | None = None) -> Minutes:
    """The last ``minutes`` minutes, oldest first: (unix minute, {"ok": n, "failed": n}) over every model."""
    current = int((time.time() if now is None else now) // 60)
    span = range(current - minutes + 1, current + 1)
    with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hgetall(_key(minute))
        hashes: Iterable[dict[bytes, bytes]] = pipe.execute()
    out = []
    for minute, fields in zip(span, hashes, strict=True):
        totals = {OK: 0, FAILED: 0}
        for field, value in fields.items():
            kind = field.decode().rpartition("|")[2]
            if kind in totals:
                totals[kind] += int(value)
        out.append((minute, totals))
    return out
