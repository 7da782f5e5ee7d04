"""Redis's memory against its budget: the start-up check that no queued row can be evicted,
run by the serving processes as they start (the API server, Celery's worker, beat and Flower;
not CLI commands or tests, which build apps too), and the gauges /metrics reads (used memory,
maxmemory, evicted keys, per Redis).

The queue's Redis (REDIS_URL) holds what must never be evicted: row queues, Celery's
messages, and keys whose early loss changes behaviour (README, Redis keys). It must run
``maxmemory-policy noeviction``. The output cache and result views may be evicted, so
they belong in a Redis of their own (CACHE_REDIS_URL) with ``maxmemory`` and
``allkeys-lru``. Nothing here changes a Redis's configuration: it says what is wrong, naming
the setting, and the processes start all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import Redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from app.config import Settings
    from app.services import Services

log = logging.getLogger(__name__)


def budget_warnings(queue: dict[str, Any], cache: dict[str, Any] | None) -> list[str]:
    """What is wrong with the queue's and (when it has its own, ``cache``) the cache's Redis,
    given each one's ``INFO memory``."""
    warnings = []
    policy = queue.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        warnings.append(
            f"REDIS_URL's Redis runs maxmemory-policy {policy}: it may evict queued rows, Celery's "
            "messages and the keys that hold a queue for a worker; set maxmemory-policy noeviction "
            "there and give the output cache a Redis of its own (CACHE_REDIS_URL)"
        )
    if cache is None:
        if int(queue.get("maxmemory", 0)) > 0:
            warnings.append(
                f"the output cache and result views share REDIS_URL's Redis and its maxmemory "
                f"({queue['maxmemory']} bytes): once they fill it, it refuses queued rows too; set "
                "CACHE_REDIS_URL to a Redis of its own with maxmemory and maxmemory-policy allkeys-lru"
            )
        return warnings
    if int(cache.get("maxmemory", 0)) == 0:
        warnings.append(
            "CACHE_REDIS_URL's Redis has no maxmemory: the output cache grows with traffic for "
            "CACHE_TTL_SECONDS; set maxmemory and maxmemory-policy allkeys-lru there"
        )
    elif not str(cache.get("maxmemory_policy", "")).startswith("allkeys-"):
        warnings.append(
            f"CACHE_REDIS_URL's Redis runs maxmemory-policy {cache.get('maxmemory_policy')}: once "
            "full it refuses new cached outputs (skipped and counted) instead of evicting old "
            "ones; set maxmemory-policy allkeys-lru there"
        )
    return warnings


def check_at_start(settings: Settings) -> list[str]:
    """Log a warning for each of :func:`budget_warnings`; a Redis that cannot be reached is
    left to the processes' own retries (the check is skipped)."""
    separate = bool(settings.cache_redis_url) and settings.cache_redis_url != settings.redis_url
    try:
        queue = _memory_info(settings.redis_url)
        cache = _memory_info(settings.cache_redis_url) if separate else None
    except RedisError as exc:
        # A server started before its Redis: it retries on its own, and says nothing more here.
        log.info("Redis not reachable yet (%s): each process checks its memory settings as it starts", exc)
        return []
    warnings = budget_warnings(queue, cache)
    for warning in warnings:
        log.warning(warning)
    return warnings


def _memory_info(url: str) -> dict[str, Any]:
    with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
        return client.info("memory")


def redis_gauges(svc: Services) -> Iterator[Metric]:
    """Each Redis's memory against its budget and its evictions (label ``redis``: queue, cache)."""
    used = GaugeMetricFamily("predq_redis_used_memory_bytes", "Memory Redis uses.", labels=["redis"])
    budget = GaugeMetricFamily(
        "predq_redis_maxmemory_bytes", "Redis's maxmemory (0: no budget).", labels=["redis"]
    )
    evicted = CounterMetricFamily(
        "predq_redis_evicted_keys", "Keys Redis evicted to stay within maxmemory.", labels=["redis"]
    )
    clients = {"queue": svc.redis} | ({"cache": svc.cache} if svc.cache is not svc.redis else {})
    for role, client in clients.items():
        try:
            info = client.info()
        except RedisError as exc:  # a scrape must still answer when Redis is down
            log.warning("%s Redis memory unavailable: %s", role, exc)
            continue
        used.add_metric([role], info["used_memory"])
        budget.add_metric([role], info["maxmemory"])
        evicted.add_metric([role], info["evicted_keys"])
    yield from (used, budget, evicted)
