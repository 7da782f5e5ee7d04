"""Rate limits per API key, counted in Redis by the `limits` library.

Every /v1 request counts against its key's limit (the key's own ``rate_limit``, else
``Settings.rate_limit``); with auth off, against the client address. Fixed windows cost
one Redis round trip per request (a sliding window costs more), and no rate-limit headers
are sent but Retry-After, for the same reason. If Redis is down requests go through: jobs
are stored in the database and must still be accepted.

We call `limits` directly rather than through Flask-Limiter (which is built on it): all
predq needs is one ``hit()`` per limit before each /v1 request, and Flask-Limiter's
per-request machinery around that call (runtime limit objects, scopes, exemption lookups)
cost a cached submit 173-300 µs of CPU against 10-124 µs for the direct call (both in
one process, three runs), for features predq does not use.
"""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

from flask import Flask, request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.auth import PROTECTED_PREFIX, current_principal
from app.config import Settings
from app.errors import RateLimited

log = logging.getLogger(__name__)

_NAMESPACE = "predq"


class RateLimits:
    """Counts each caller's requests; ``check`` raises RateLimited (429) once a limit is spent."""

    def __init__(self, redis_url: str) -> None:
        # One connection pool per process, the same way our own Redis clients are built.
        storage = storage_from_string(redis_url, health_check_interval=30)
        self._limiter = FixedWindowRateLimiter(storage)
        self._storage_errors = storage.base_exceptions
        # Off only to measure what the limiter costs (python -m bench.security_overhead).
        self.enabled = True

    def check(self, caller: str, limit_text: str) -> None:
        if not self.enabled:
            return
        for limit in _parse(limit_text):
            try:
                if self._limiter.hit(limit, _NAMESPACE, caller):
                    continue
                reset_at = self._limiter.get_window_stats(limit, _NAMESPACE, caller).reset_time
            except self._storage_errors as error:
                log.warning("rate limit not checked, Redis unavailable: %s", error)
                return
            retry_after = max(1, math.ceil(reset_at - time.time()))
            log.info("rate limit %s exceeded by %s", limit, caller)
            raise RateLimited(
                f"rate limit of {limit} exceeded; retry in {retry_after} s",
                retry_after=retry_after,
                limit=str(limit),
            )


@lru_cache(maxsize=1024)
def _parse(limit_text: str) -> tuple[RateLimitItem, ...]:
    # Shortest window first, so a burst is refused by the limit it breaks soonest.
    return tuple(sorted(parse_many(limit_text)))


def init_rate_limits(app: Flask, settings: Settings) -> RateLimits:
    """Check the caller's limit before every /v1 request (after auth has named the caller)."""
    limits = app.extensions["rate_limits"] = RateLimits(settings.redis_url)

    @app.before_request
    def _count_request() -> None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return
        principal = current_principal()
        if principal is None:
            limits.check(f"addr:{request.remote_addr or 'unknown'}", settings.rate_limit)
        else:
            limits.check(f"key:{principal.key_id}", principal.rate_limit or settings.rate_limit)

    return limits
