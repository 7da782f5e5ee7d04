"""A process's memory budget for what it builds per model version: loaded versions, explainers,
card importances. Each is a :class:`VersionCache`, least recently used first out, bounded by
bytes (``MODEL_CACHE_BYTES``) and by entries (``MODEL_CACHE_MAX``); 0 leaves a bound off.

An entry's size is measured once, when it is put in, by whoever built it (the registry counts a
version's artifact bytes plus its ONNX bytes when a compiled backend rides along: cheap, and close
to what a forest's arrays take once loaded, since joblib stores them raw; see the README).

When an entry must go, versions out of service (no alias, no traffic weight, no shadow: the
``in_service`` callable, asked only then, and never under the cache's lock: it queries the
database, and a slow answer must not hold up lookups of what is held) go first, least
recently used first; then the least recently used of the rest. The entry just put in never
goes to make room for itself. An entry bigger than the whole byte budget is not kept: the
caller uses what it built, and it is dropped when the caller lets go of it, with a warning in
the log.

Loads, evictions and bytes held are Prometheus metrics (app/metrics.py), labelled by ``cache``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import numpy as np

from app import metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=tuple[Any, ...])
V = TypeVar("V")

#: (model name, version): what "in service" is decided on; a cache's key starts with it.
VersionKey = tuple[str, int]


class VersionCache(Generic[K, V]):
    """An LRU of per-version things, bounded by bytes and count; thread-safe.

    Keys are tuples starting with (name, version). ``in_service`` returns the (name, version)
    pairs to keep longest; it is called only when something must be evicted.
    """

    def __init__(
        self,
        kind: str,
        max_bytes: int = 0,
        max_entries: int = 0,
        in_service: Callable[[], Iterable[VersionKey]] | None = None,
    ) -> None:
        self.kind = kind
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.in_service = in_service
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.oversized: set[K] = set()
        """Keys refused for being bigger than the whole budget (warming leaves them to demand)."""

    def get(self, key: K) -> V | None:
        """The entry, marked most recently used; None when not held."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Hold ``value`` (``size`` bytes), evicting as needed; False when it is over the budget alone."""
        model = str(key[0])
        metrics.MODEL_LOADS.labels(self.kind, model).inc()
        if self.max_bytes and size > self.max_bytes:
            log.warning(
                "%s %s: %d bytes is more than MODEL_CACHE_BYTES=%d alone; used once and dropped",
                self.kind, key, size, self.max_bytes,
            )  # fmt: skip
            metrics.MODEL_EVICTIONS.labels(self.kind, model, "over_budget").inc()
            self.oversized.add(key)
            self.discard(key)
            return False
        with self._lock:
            self.oversized.discard(key)
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            must_evict = self._over(0, 0)
            metrics.MODEL_CACHE_BYTES.labels(self.kind).set(self._bytes)
        if not must_evict:
            return True
        # Asked outside the lock: it may query the database, and every lookup of a held
        # version (each batch's) takes the lock. What is held may change meanwhile, so the
        # victims are chosen under the lock again, from what is held then.
        serving = self._serving()
        with self._lock:
            victims = self._victims(key, serving)
            for victim in victims:
                self._bytes -= self._entries.pop(victim[0])[1]
            metrics.MODEL_CACHE_BYTES.labels(self.kind).set(self._bytes)
        for victim, reason in victims:
            log.info("%s: dropped %s (%s) to stay within the budget", self.kind, victim, reason)
            metrics.MODEL_EVICTIONS.labels(self.kind, str(victim[0]), reason).inc()
        return True

    def discard(self, key: K) -> None:
        """Forget ``key`` if held (a version whose artifact changed)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
                metrics.MODEL_CACHE_BYTES.labels(self.kind).set(self._bytes)

    def keys(self) -> list[K]:
        """What is held, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def full(self) -> bool:
        """No room for one more entry without evicting (what warming stops at)."""
        with self._lock:
            return bool(
                (self.max_entries and len(self._entries) >= self.max_entries)
                or (self.max_bytes and self._bytes >= self.max_bytes)
            )

    def _over(self, removed: int, freed: int) -> bool:
        count, size = len(self._entries) - removed, self._bytes - freed
        return bool(
            (self.max_entries and count > self.max_entries) or (self.max_bytes and size > self.max_bytes)
        )

    def _victims(self, newest: K, serving: set[VersionKey]) -> list[tuple[K, str]]:
        """What to evict so the entries fit, versions not in ``serving`` first (under the lock)."""
        if not self._over(0, 0):
            return []
        older = [k for k in self._entries if k != newest]
        ordered = [(k, "out_of_service") for k in older if tuple(k[:2]) not in serving]
        ordered += [(k, "lru") for k in older if tuple(k[:2]) in serving]
        chosen: list[tuple[K, str]] = []
        freed = 0
        for key, reason in ordered:
            if not self._over(len(chosen), freed):
                break
            chosen.append((key, reason))
            freed += self._entries[key][1]
        return chosen

    def _serving(self) -> set[VersionKey]:
        """What ``in_service`` says (never called under the lock: it may ask the database)."""
        if self.in_service is None:
            return set()
        try:
            return set(self.in_service())
        except Exception as exc:  # the database is away: plain LRU this once
            log.warning("%s: which versions serve is unknown (%s); evicting by recency alone", self.kind, exc)
            return set()


def array_bytes(obj: Any, depth: int = 4) -> int:
    """A deep size estimate for objects made of numpy arrays (an explainer's copy of the trees):
    the bytes of every array reachable through attributes, lists, tuples and dicts, ``depth`` deep."""
    seen: set[int] = set()

    def walk(item: Any, left: int) -> int:
        if id(item) in seen or left < 0:
            return 0
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            return int(item.nbytes)
        if isinstance(item, dict):
            return sum(walk(v, left - 1) for v in item.values())
        if isinstance(item, (list, tuple)):
            return sum(walk(v, left - 1) for v in item)
        attributes = getattr(item, "__dict__", None)
        return walk(attributes, left) if isinstance(attributes, dict) else 0

    return walk(obj, depth)
