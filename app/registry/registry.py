"""The model registry: stored artifacts, their versions, aliases and signatures.

Artifacts live under ``ARTIFACT_ROOT/<name>/<version>/model.<joblib|skops>`` (a directory or
an S3 prefix, app/storage/); the database holds their sha256. Loading always goes through
:meth:`Registry.load`, which refuses a file whose bytes no longer match the recorded digest.

The Registry is what the rest of predq calls, and it caches what requests read (aliases,
policies, loaded estimators). Writing is done beside it: registering a version and the
artifact formats in app/registry/registration.py, moving aliases in aliases.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import TTLCache, cached
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from app.db import AliasEvent, Model, ModelAlias, ModelVersion, newest_rows
from app.errors import (
    AliasNotFound,
    ModelNotFound,
    NothingToRollBack,
    VersionNotFound,
)
from app.registry import aliases, loading, pools, registration, traffic
from app.registry.describing import describe_model
from app.registry.loading import CompiledLoader
from app.registry.memory import VersionCache
from app.registry.signature import feature_index
from app.registry.traffic import DEFAULT_POLICY, Policy
from app.registry.versions import (
    DEFAULT_ALIAS,
    MAX_VERSION,
    NAME,
    LoadedVersion,
    ServedVersion,
    existing_name,
)
from app.storage import Artifacts, ObjectStore


class Registry:
    """Every model's versions, aliases and traffic policies; one per process (in Services)."""

    def __init__(
        self,
        engine: Engine,
        artifacts: str | Path | Artifacts,
        cache_seconds: float = 2.0,
        allow_pickle: bool = True,
        skops_trusted_types: list[str] | None = None,
        reference_rows: int = 2000,
        compiled_loader: CompiledLoader | None = None,
        cache_bytes: int = 0,
        cache_max: int = 0,
    ) -> None:
        self.engine = engine
        # A path (tests, scripts): a local store read in place.
        self.artifacts = (
            artifacts if isinstance(artifacts, Artifacts) else Artifacts(ObjectStore(str(artifacts)))
        )
        self.allow_pickle = allow_pickle
        self.skops_trusted_types = set(skops_trusted_types or [])
        self.reference_rows = reference_rows
        # Alias lookups are read on every request; a short TTL keeps them off the database
        # while a promotion still takes effect within seconds.
        self._resolved: TTLCache[tuple[str, int | None, str | None], ServedVersion] = TTLCache(
            maxsize=1024, ttl=cache_seconds
        )
        self._policies: TTLCache[str, Policy] = TTLCache(maxsize=1024, ttl=cache_seconds)
        self._resolved_lock = threading.Condition()
        # With a condition, when an entry expires one thread looks it up and the others
        # wait for that answer: every thread of a busy API process missing at once cost
        # ~4% of its CPU in three queries each.
        self._resolve_cached = cached(self._resolved, key=lambda *args: args, condition=self._resolved_lock)(
            self._resolve_uncached
        )
        self._policy_cached = cached(self._policies, key=lambda name: name, condition=self._resolved_lock)(
            self._policy_uncached
        )
        self._pools: TTLCache[str, str] = TTLCache(maxsize=1024, ttl=cache_seconds)
        self._pool_cached = cached(self._pools, key=lambda name: name, condition=self._resolved_lock)(
            lambda name: pools.pool_of(self.engine, name)
        )
        # None (INFERENCE_BACKEND=sklearn): no compiled version is loaded, all serve scikit-learn.
        self.compiled_loader = compiled_loader
        self.memory: VersionCache[tuple[str, int], LoadedVersion] = VersionCache(
            "models", cache_bytes, cache_max, self.in_service_versions
        )
        self._derived: dict[str, VersionCache[Any, Any]] = {}
        self._loader = loading.Loader(
            self.artifacts, self.memory, loading.deserializer(allow_pickle), compiled_loader
        )

    # -- writing -----------------------------------------------------------------------

    def register(self, name: str, source: str | Path, **options: Any) -> ServedVersion:
        """Store ``source`` as the next version of ``name`` (see registration.register for
        ``options``); the first version becomes champion."""
        return registration.register(self, name, source, **options)

    def set_alias(self, name: str, alias: str, version: int, actor: str = "cli", reason: str = "") -> None:
        """Point ``alias`` at ``version``, recording who did it and why in the audit trail."""
        aliases.set_alias(self.engine, name, alias, version, actor, reason)
        with self._resolved_lock:
            self._resolved.clear()

    def set_policy(self, name: str, policy: Policy) -> None:
        """Route requests of NAME by ``policy``; every alias or version it names must exist now."""
        existing_name(name)
        for route in (*policy.routes, *([policy.shadow] if policy.shadow else [])):
            self._resolve_uncached(name, route.version, route.alias)
        default = policy == DEFAULT_POLICY
        with Session(self.engine) as session, session.begin():
            model = session.scalar(select(Model).where(Model.name == name))
            if model is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)
            model.traffic_policy = None if default else policy.as_dict()
        with self._resolved_lock:
            self._policies.clear()

    def policy(self, name: str) -> Policy:
        """NAME's traffic policy, cached like alias lookups (a change applies within seconds)."""
        return self._policy_cached(name)

    def pool(self, name: str) -> str:
        """NAME's worker pool (app/registry/pools.py), cached like alias lookups."""
        return self._pool_cached(name)

    def set_pool(self, name: str, pool: str) -> None:
        """Put NAME's online rows on ``pool``'s queue (checked against POOLS by the caller)."""
        pools.set_pool(self.engine, name, pool)
        with self._resolved_lock:
            self._pools.clear()

    def _policy_uncached(self, name: str) -> Policy:
        existing_name(name)
        with Session(self.engine) as session:
            spec = session.scalar(select(Model.traffic_policy).where(Model.name == name))
        return traffic.parse(spec)

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS, actor: str = "cli", reason: str = "") -> int:
        """Point ``alias`` back where its last move took it from; returns that version."""
        last = aliases.last_move(self.engine, name, alias)
        if last is None or last.from_version is None:
            raise NothingToRollBack(
                f"{name}: alias {alias!r} has no earlier version to go back to", model=name, alias=alias
            )
        self.set_alias(name, alias, last.from_version, actor, reason or f"rollback from v{last.to_version}")
        return last.from_version

    def alias_history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The audit trail of a model's aliases, newest first."""
        self.require(name)
        return newest_rows(self.engine, AliasEvent, name, AliasEvent.id, limit)

    def require(self, name: str) -> None:
        """Raise ModelNotFound (404) unless NAME is a registered model: one indexed lookup."""
        existing_name(name)
        with self.engine.connect() as conn:
            if conn.scalar(select(Model.id).where(Model.name == name)) is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)

    # -- reading -----------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> ServedVersion:
        """The version a request for ``name`` should be served by (champion by default)."""
        return self._resolve_cached(name, version, alias)

    def _resolve_uncached(self, name: str, version: int | None, alias: str | None) -> ServedVersion:
        existing_name(name)
        if version is not None and not 1 <= version <= MAX_VERSION:
            # Before any query: PostgreSQL refuses a number its integer column cannot hold (a 500).
            raise VersionNotFound(f"model {name!r} has no version {version}", model=name, version=version)
        if alias is not None and not NAME.fullmatch(alias):
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}", model=name, alias=alias)
        with Session(self.engine) as session:
            model = session.scalar(select(Model).where(Model.name == name))
            if model is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)
            if version is None:
                wanted = alias or DEFAULT_ALIAS
                pointer = session.get(ModelAlias, (model.id, wanted))
                if pointer is None:
                    raise AliasNotFound(
                        f"model {name!r} has no alias {wanted!r}",
                        model=name,
                        alias=wanted,
                    )
                version = pointer.version
            row = session.scalar(
                select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
            )
            if row is None:
                raise VersionNotFound(
                    f"model {name!r} has no version {version}",
                    model=name,
                    version=version,
                )
            return ServedVersion(
                name,
                row.version,
                row.sha256,
                row.artifact_path,
                row.signature,
                feature_index(row.signature),
                row.format,
                tuple(row.trusted_types or ()),
                row.compiled,
            )

    def load(self, name: str, version: int) -> tuple[Any, ServedVersion]:
        """The estimator for ``name``/``version``, loaded once per process after a sha256 check
        (its compiled backend is not loaded for this: cards and explanations use the estimator)."""
        loaded = self.loaded(name, version, compiled=False)
        return loaded.estimator, loaded.served

    def loaded(self, name: str, version: int, *, compiled: bool = True) -> LoadedVersion:
        """The version as this process holds it: its estimator and, when it serves compiled
        (and a compiled loader is set), its compiled backend; each artifact sha256-checked.
        Held under the memory budget (app/registry/memory.py): a version evicted, or too big to
        keep, is loaded again when next asked for."""
        return self._loader.loaded(self.resolve(name, version=version), compiled)

    def loaded_versions(self) -> list[tuple[str, int]]:
        """(name, version) of every version this process holds loaded, least recently used first."""
        return self.memory.keys()

    def derived(self, kind: str) -> VersionCache[Any, Any]:
        """This process's cache of what it builds per version besides the model (``explainers``,
        ``importances``), under the same bounds as the loaded versions."""
        with self._resolved_lock:
            if kind not in self._derived:
                memory = self.memory
                self._derived[kind] = VersionCache(
                    kind, memory.max_bytes, memory.max_entries, memory.in_service
                )
            return self._derived[kind]

    def in_service_versions(self) -> set[tuple[str, int]]:
        """Versions an alias points at, a traffic route weighs or that shadows: evicted last."""
        return loading.in_service(self.engine)

    def record_compiled(
        self, name: str, version: int, record: dict[str, Any] | None, onnx: bytes | None
    ) -> None:
        """Store what compiling found (and the ONNX artifact, when it serves); see registration."""
        registration.store_compiled(self, name, version, record, onnx)
        with self._resolved_lock:
            self._resolved.clear()

    def card_notes(self, name: str, version: int) -> str | None:
        """What the registrant wrote of the version's intended use and limitations, if anything."""
        with Session(self.engine) as session:
            return session.scalar(
                select(ModelVersion.card_notes)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.name == name, ModelVersion.version == version)
            )

    def reference(self, name: str, version: int) -> np.ndarray | None:
        """The version's reference sample for drift checks, or None when it has none."""
        with Session(self.engine) as session:
            rows = session.scalar(
                select(ModelVersion.reference)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.name == name, ModelVersion.version == version)
            )
        return np.asarray(rows, dtype=np.float64) if rows else None

    def list_models(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            models = session.scalars(
                select(Model)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
                .order_by(Model.name)
            ).all()
            return [describe_model(m, self.compiled_loader is not None) for m in models]

    def describe(self, name: str) -> dict[str, Any]:
        existing_name(name)
        with Session(self.engine) as session:
            model = session.scalar(
                select(Model)
                .where(Model.name == name)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
            )
            if model is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)
            return describe_model(model, self.compiled_loader is not None)
