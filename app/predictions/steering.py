"""What a submit asks of the queue besides its rows: its priority (within its API key's
ceiling) and its deadline (its own, else its model's default, else QUEUE_TTL_SECONDS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db import PRIORITIES
from app.errors import Forbidden
from app.services import Services

if TYPE_CHECKING:
    from app.access.auth import Principal

#: The longest deadline a submit may name (a day), and QUEUE_TTL_SECONDS's meaning of none.
MAX_DEADLINE_MS = 86_400_000


def priority_for(caller: Principal | None, asked: str | None) -> str:
    """The job's priority: ``asked``, else the key's default, else normal. Forbidden (403)
    when ``asked`` is above the key's ceiling (a default above it is lowered to it)."""
    ceiling = caller.max_priority if caller is not None and caller.max_priority else PRIORITIES[0]
    if asked is not None and PRIORITIES.index(asked) < PRIORITIES.index(ceiling):
        raise Forbidden(
            f"this API key may not submit at priority {asked!r}; at most {ceiling!r}",
            priority=asked,
            max_priority=ceiling,
        )
    chosen = asked or (caller.default_priority if caller is not None else None) or "normal"
    return max(chosen, ceiling, key=PRIORITIES.index)


def deadline_ms_for(svc: Services, name: str, asked: int | None) -> int | None:
    """How long the job may wait to start, in milliseconds; None: as long as it takes."""
    if asked is not None:
        return asked
    model_default = svc.deadlines.get(name)
    if model_default is not None:
        return model_default
    ttl = svc.settings.queue_ttl_seconds
    return round(ttl * 1000) if ttl > 0 else None
