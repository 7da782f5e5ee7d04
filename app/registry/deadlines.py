"""Each model's default deadline for its jobs (``models.default_deadline_ms``), set by admins
and read on every submit that names none: cached per process like alias lookups, so a change
applies within REGISTRY_CACHE_SECONDS everywhere (at once in the process that made it)."""

from __future__ import annotations

import threading

from cachetools import TTLCache, cached
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from app.db import Model
from app.errors import ModelNotFound


class DeadlineDefaults:
    """Models' default deadlines in milliseconds (None: none; QUEUE_TTL_SECONDS applies)."""

    def __init__(self, engine: Engine, cache_seconds: float = 2.0) -> None:
        self.engine = engine
        self._cache: TTLCache[str, int | None] = TTLCache(maxsize=1024, ttl=cache_seconds)
        self._lock = threading.Condition()
        self._get = cached(self._cache, key=lambda name: name, condition=self._lock)(self._read)

    def get(self, name: str) -> int | None:
        return self._get(name)

    def set(self, name: str, deadline_ms: int | None) -> None:
        """Set (or with None clear) NAME's default deadline; ModelNotFound for an unknown model."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(Model).where(Model.name == name).values(default_deadline_ms=deadline_ms)
            ).rowcount
        if not changed:
            raise ModelNotFound(f"no model named {name!r}", model=name)
        with self._lock:
            self._cache.clear()

    def _read(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(Model.default_deadline_ms).where(Model.name == name)).scalar()
