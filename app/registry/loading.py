"""Loading a version into a process: its estimator and, when it serves compiled, its compiled
backend, each from bytes checked against the registry's sha256 (registration.verified_bytes),
kept in the registry's :class:`~app.registry.memory.VersionCache` under the memory budget.

A version's size in that budget is measured once, here: the bytes of its artifact plus those of
its ONNX artifact when a compiled backend is loaded with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.db import Model, ModelAlias
from app.registry import registration, traffic
from app.registry.memory import VersionCache, VersionKey
from app.registry.registration import verified_bytes
from app.registry.versions import LoadedVersion, ServedVersion
from app.storage import Artifacts

#: Builds a version's compiled backend from its checked ONNX bytes (app/scoring/compiled.py's load).
CompiledLoader = Callable[[bytes, ServedVersion], Any]


class Loader:
    """Loads versions once per process (one at a time), holding them in ``cache``."""

    def __init__(
        self,
        artifacts: Artifacts,
        cache: VersionCache[VersionKey, LoadedVersion],
        deserialize: Callable[[ServedVersion, bytes], Any],
        compiled_loader: CompiledLoader | None,
    ) -> None:
        self.artifacts = artifacts
        self.cache = cache
        self.deserialize = deserialize
        self.compiled_loader = compiled_loader
        self.lock = threading.Lock()

    def loaded(self, served: ServedVersion, compiled: bool) -> LoadedVersion:
        """``served`` as this process holds it (loading what it lacks); see Registry.loaded."""
        key = (served.name, served.version)
        wanted = compiled and served.compiled_serving and self.compiled_loader is not None
        entry = self.cache.get(key)
        if entry is not None and _current(entry, served, wanted):
            return entry
        with self.lock:  # one load per version, however many threads ask at once
            entry = self.cache.get(key)
            if entry is not None and _current(entry, served, wanted):
                return entry
            if entry is None or entry.served.sha256 != served.sha256:
                data = verified_bytes(self.artifacts, served.artifact_path, served.sha256, served)
                # Deserialize the very bytes that were hashed, so the file cannot change in between.
                estimator, size = self.deserialize(served, data), len(data)
                entry = None
            else:  # only the compiled record changed, or is wanted now
                estimator, size = entry.estimator, entry.artifact_bytes
            same_record = entry is not None and entry.served.compiled == served.compiled
            session = entry.compiled if entry is not None and same_record else None
            onnx_size = entry.onnx_bytes if session is not None and entry is not None else 0
            if wanted and session is None and self.compiled_loader is not None:
                record = served.compiled or {}
                onnx = verified_bytes(self.artifacts, record["artifact_path"], record["sha256"], served)
                session, onnx_size = self.compiled_loader(onnx, served), len(onnx)
            serving = served.compiled_serving
            entry = LoadedVersion(
                served, estimator, session if serving else None, size, onnx_size if serving else 0
            )
            self.cache.put(key, entry, entry.nbytes)
            return entry


def _current(entry: LoadedVersion, served: ServedVersion, wanted: bool) -> bool:
    return (
        entry.served.sha256 == served.sha256
        and entry.served.compiled == served.compiled
        and (entry.compiled is not None or not wanted)
    )


def in_service(engine: Engine) -> set[VersionKey]:
    """(name, version) of every version an alias points at, a traffic route names or that shadows."""
    with engine.connect() as conn:
        pointed = conn.execute(
            select(Model.name, ModelAlias.version).join(Model, Model.id == ModelAlias.model_id)
        )
        found = {(name, version) for name, version in pointed}
        for name, spec in conn.execute(
            select(Model.name, Model.traffic_policy).where(Model.traffic_policy.is_not(None))
        ):
            policy = traffic.parse(spec)
            routes = [r for r in policy.routes if r.weight > 0] + ([policy.shadow] if policy.shadow else [])
            found.update((name, r.version) for r in routes if r.version is not None)
    return found


def deserializer(allow_pickle: bool) -> Callable[[ServedVersion, bytes], Any]:
    """The estimator from an artifact's checked bytes, by the version's format and trusted types."""

    def deserialize(served: ServedVersion, data: bytes) -> Any:
        return registration.deserialize(
            served.format, data, served.trusted_types,
            allow_pickle=allow_pickle, what=f"{served.name} v{served.version}",
        )  # fmt: skip

    return deserialize
