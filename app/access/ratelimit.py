"""Rate limits per API key, counted in Redis by the `limits` library.

Every /v1 request counts against its key's limit (the key's own ``rate_limit``, else
``Settings.rate_limit``); with auth off, against the client address. Fixed windows cost
one Redis round trip per request (a sliding window costs more), and no rate-limit headers
are sent but Retry-After, for the same reason. If Redis is down requests go through: jobs
are stored in the database and must still be accepted.

A prediction submit sends its count to Redis in the same script call as its cache lookup
and push (app/predictions/queue.py), on the same counters: the hook hands it a :class:`RateCharge`
instead of calling Redis, and counts it after the answer if the submit was refused before
it reached Redis (a 404 or 422), so every request still counts once.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.access.auth import PROTECTED_PREFIXES, current_principal
from app.config import Settings
from app.errors import RateLimited

log = logging.getLogger(__name__)

_NAMESPACE = "predq"


@dataclass
class RateCharge:
    """One request's count against its caller's limits, for a view that sends it to Redis itself.

    ``counters`` are the Redis keys `limits` counts the caller's fixed windows under, one
    per limit (shortest window first); the view's script increments each as `limits` would
    and sets ``sent`` when it has been sent.
    """

    caller: str
    limits: tuple[RateLimitItem, ...]
    counters: list[str]
    sent: bool = False

    def script_keys_and_args(self) -> tuple[list[str], list[int]]:
        """The counters' keys, and each one's limit and window in seconds; marks the charge sent."""
        self.sent = True
        args = []
        for limit in self.limits:
            args += [limit.amount, limit.get_expiry()]
        return self.counters, args

    def refused(self, limit_number: int, resets_in: int) -> RateLimited:
        """The 429 for a script that found the ``limit_number``-th limit (from 1) spent."""
        return _refused(self.limits[limit_number - 1], self.caller, resets_in)


class RateLimits:
    """Counts each caller's requests; ``check`` raises RateLimited (429) once a limit is spent."""

    def __init__(self, redis_url: str) -> None:
        # One connection pool per process, the same way our own Redis clients are built.
        storage = storage_from_string(redis_url, health_check_interval=30)
        # A redis:// URL gives RedisStorage, whose keys the submit script counts on directly.
        assert isinstance(storage, RedisStorage), f"rate limits need Redis, not {type(storage).__name__}"
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self._storage_errors = storage.base_exceptions
        # Off only to measure what the limiter costs (python -m bench.security_overhead).
        self.enabled = True

    def check(self, caller: str, limit_text: str) -> None:
        """Count one request against ``caller``'s limits; raise RateLimited once one is spent."""
        self._enforce(caller, limit_text, self._limiter.hit)

    def _enforce(self, caller: str, limit_text: str, passes: Callable[..., bool]) -> None:
        if not self.enabled:
            return
        for limit in _parse(limit_text):
            try:
                if passes(limit, _NAMESPACE, caller):
                    continue
                reset_at = self._limiter.get_window_stats(limit, _NAMESPACE, caller).reset_time
            except self._storage_errors as error:
                log.warning("rate limit not checked, Redis unavailable: %s", error)
                return
            raise _refused(limit, caller, math.ceil(reset_at - time.time()))

    def charge(self, caller: str, limit_text: str) -> RateCharge:
        """The count of one request, for a script to send (see RateCharge)."""
        limits = _parse(limit_text)
        counters = [self._storage.prefixed_key(limit.key_for(_NAMESPACE, caller)) for limit in limits]
        return RateCharge(caller, limits, counters)

    def settle(self, charge: RateCharge) -> None:
        """Count a charge its request never sent (it was refused first); the answer stands."""
        self.count(charge.caller, charge.limits)

    def count(self, caller: str, limits: tuple[RateLimitItem, ...]) -> None:
        """Count one request against ``caller``'s limits without refusing it."""
        if not self.enabled:
            return
        try:
            for limit in limits:
                self._limiter.hit(limit, _NAMESPACE, caller)
        except self._storage_errors as error:
            log.warning("rate limit not counted, Redis unavailable: %s", error)


def _refused(limit: RateLimitItem, caller: str, resets_in: float) -> RateLimited:
    retry_after = max(1, math.ceil(resets_in))
    log.info("rate limit %s exceeded by %s", limit, caller)
    return RateLimited(
        f"rate limit of {limit} exceeded; retry in {retry_after} s",
        retry_after=retry_after,
        limit=str(limit),
    )


def count_failed_key(limits: RateLimits, settings: Settings) -> None:
    """Count a refused API key against this request's client address; 429 once it has spent
    ``AUTH_FAILURE_LIMIT``. Only refused keys are counted and refused here: a valid key from
    the same address (a NAT, an office proxy) is never held back by them."""
    limits.check(f"failed-key:{request.remote_addr or 'unknown'}", settings.auth_failure_limit)


def sends_own_rate_charge(view: Any) -> Any:
    """Mark a view that sends its request's count to Redis itself (``pending_charge()``)."""
    view.sends_own_rate_charge = True
    return view


def pending_charge() -> RateCharge | None:
    """This request's count, when its view is to send it (None when limits are off)."""
    return g.get("rate_charge")


@lru_cache(maxsize=1024)
def _parse(limit_text: str) -> tuple[RateLimitItem, ...]:
    # Shortest window first, so a burst is refused by the limit it breaks soonest.
    return tuple(sorted(parse_many(limit_text)))


def init_rate_limits(app: Flask, settings: Settings, limits: RateLimits) -> None:
    """Check the caller's limit before every /v1 request (after auth has named the caller)."""
    app.extensions["rate_limits"] = limits

    @app.before_request
    def _count_request() -> None:
        if not request.path.startswith(PROTECTED_PREFIXES):
            return
        principal = current_principal()
        if principal is None:
            caller, limit_text = f"addr:{request.remote_addr or 'unknown'}", settings.rate_limit
        else:
            caller, limit_text = f"key:{principal.key_id}", principal.rate_limit or settings.rate_limit
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(view, "sends_own_rate_charge", False) and limits.enabled:
            g.rate_charge = limits.charge(caller, limit_text)
        else:
            limits.check(caller, limit_text)

    @app.after_request
    def _count_unsent(response: Response) -> Response:
        charge = pending_charge()
        if charge is not None and not charge.sent:
            limits.settle(charge)
        return response
