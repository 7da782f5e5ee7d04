"""Worker heartbeats: each worker process says it is alive in Redis every few seconds.

Format: one Redis hash, ``predq:heartbeats``, field = the worker's node name
(``celery@host``), value = JSON ``{"queues": [...], "pid": n, "seen": unix seconds}``. The
console reads the hash in one call, never a live Celery ``inspect`` (which waits a second
or more for replies); a node silent for ``WORKER_SILENT_SECONDS`` is shown as silent and one
silent for :data:`FORGET_SECONDS` is dropped from the hash.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import RedisError

KEY = "predq:heartbeats"
INTERVAL_SECONDS = 5.0
FORGET_SECONDS = 24 * 3600.0


def beat(redis: Redis, node: str, queues: list[str], now: float | None = None) -> None:
    """Record that ``node`` (serving ``queues``) is alive now."""
    seen = time.time() if now is None else now
    redis.hset(KEY, node, orjson.dumps({"queues": queues, "pid": os.getpid(), "seen": seen}))


def start(redis: Redis, node: str, queues: list[str], interval: float = INTERVAL_SECONDS) -> threading.Thread:
    """A daemon thread that beats every ``interval`` seconds for as long as the process lives."""

    def loop() -> None:
        while True:
            try:
                beat(redis, node, queues)
            except RedisError:
                pass  # Redis down: the console says the worker is silent, which is what it sees
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="predq-heartbeat", daemon=True)
    thread.start()
    return thread


def workers(redis: Redis, silent_after: float, now: float | None = None) -> list[dict[str, Any]]:
    """Every worker seen within FORGET_SECONDS, by name: its queues, when it was last seen, and
    whether it is silent (not seen for ``silent_after`` seconds)."""
    now = time.time() if now is None else now
    out = []
    for raw_node, raw in sorted(redis.hgetall(KEY).items()):
        node = raw_node.decode() if isinstance(raw_node, bytes) else raw_node
        beat_ = orjson.loads(raw)
        age = max(0.0, now - float(beat_["seen"]))
        if age > FORGET_SECONDS:
            redis.hdel(KEY, node)
            continue
        silent = age > silent_after
        out.append({"node": node, "queues": beat_["queues"], "seen_seconds_ago": age, "silent": silent})
    return out
