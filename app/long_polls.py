"""Long-polls over Redis: a caller waits on a short-lived list that the end it waits for is
pushed onto (a prediction job's view, ``predq:done:{id}``; a batch job's final status,
``predq:batch-done:{id}``)."""

from __future__ import annotations

import logging
from typing import cast

from redis.exceptions import RedisError

from app.services import Services

log = logging.getLogger(__name__)


def wait_on(svc: Services, key: str, seconds: float, what: str) -> bytes | None:
    """The list's first item once it is there, or None after ``seconds``; None too when Redis
    fails (logged: the caller reads what it waits for from the database instead).

    BLMOVE from the list onto itself returns the item and leaves it there, so every caller
    waiting on the same key gets it.
    """
    try:
        # Redis takes a fractional timeout; redis-py annotates it as int.
        found = svc.redis_wait.blmove(key, key, seconds, "LEFT", "RIGHT")  # type: ignore[arg-type]
    except RedisError as exc:
        log.warning("long-poll for %s fell back to one read: %s", what, exc)
        return None
    return cast(bytes | None, found)
