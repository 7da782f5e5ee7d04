"""The model registry: stored artifacts, their versions, aliases and signatures.

Artifacts live under ``artifact_root/<name>/<version>/model.<joblib|skops>``; the database
holds their sha256. Loading always goes through :meth:`Registry.load`, which refuses a file
whose bytes no longer match the recorded digest.

Two formats. joblib is pickle: loading one runs whatever code it holds, so only register
artifacts you would run as code (``ALLOW_PICKLE=false`` refuses them altogether). skops
restores only types it trusts: registration lists the types a file needs beyond skops'
defaults and refuses it unless each is trusted (``SKOPS_TRUSTED_TYPES`` or ``--trust``);
loading then allows exactly the types approved at registration.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io
from cachetools import TTLCache, cached
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from app.db import AliasEvent, Model, ModelAlias, ModelVersion, newest_rows, utcnow
from app.errors import (
    AliasNotFound,
    ArtifactIntegrityError,
    InvalidInput,
    ModelNotFound,
    NothingToRollBack,
    RegistryError,
    VersionNotFound,
)
from app.lifecycle import traffic
from app.lifecycle.traffic import DEFAULT_POLICY, Policy
from app.signature import feature_index, in_feature_order, signature_of

DEFAULT_ALIAS = "champion"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ServedVersion:
    """What the API and workers need to know about one version to serve it."""

    name: str
    version: int
    sha256: str
    artifact_path: str
    signature: dict[str, Any]
    feature_index: dict[str, int] | None
    format: str = "joblib"
    trusted_types: tuple[str, ...] = ()


FORMATS = {".skops": "skops"}  # by file suffix; anything else is joblib


class Registry:
    def __init__(
        self,
        engine: Engine,
        artifact_root: str | Path,
        cache_seconds: float = 2.0,
        allow_pickle: bool = True,
        skops_trusted_types: list[str] | None = None,
        reference_rows: int = 2000,
    ) -> None:
        self.engine = engine
        self.artifact_root = Path(artifact_root)
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
        self._loaded: dict[tuple[str, int], tuple[str, Any]] = {}

    # -- writing -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        source: str | Path,
        alias: str | None = None,
        metrics: dict[str, Any] | None = None,
        trust: list[str] | None = None,
        reference: Any = None,
        lineage: dict[str, Any] | None = None,
        actor: str = "register",
        card_notes: str | None = None,
    ) -> ServedVersion:
        """Store ``source`` as the next version of ``name``; the first version becomes champion.

        ``trust``: types a skops file may hold beyond skops' defaults and SKOPS_TRUSTED_TYPES.
        ``reference``: training inputs (array or DataFrame); a sample of up to
        ``reference_rows`` rows is kept as the baseline for drift checks.
        """
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")
        if alias is not None and not _NAME.match(alias):
            raise RegistryError(f"alias {alias!r} must match {_NAME.pattern}")
        data = Path(source).read_bytes()
        fmt = FORMATS.get(Path(source).suffix.lower(), "joblib")
        trusted = self._approve_skops_types(data, trust or []) if fmt == "skops" else []
        estimator = self._deserialize(fmt, data, trusted, what=str(source))
        if not hasattr(estimator, "predict"):
            raise RegistryError(f"{source} holds a {type(estimator).__name__}, which has no predict()")
        try:
            signature = signature_of(estimator)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        sample = self._reference_sample(reference, signature) if reference is not None else None
        digest = hashlib.sha256(data).hexdigest()

        with Session(self.engine) as session, session.begin():
            model = session.scalar(select(Model).where(Model.name == name))
            if model is None:
                model = Model(name=name)
                session.add(model)
                session.flush()
            latest = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
            )
            version = (latest or 0) + 1
            relative = Path(name) / str(version) / f"model.{fmt}"
            target = self.artifact_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # The bytes that were hashed and checked, not the file again (it may have changed).
            target.write_bytes(data)
            session.add(
                ModelVersion(
                    model_id=model.id,
                    version=version,
                    artifact_path=str(relative),
                    sha256=digest,
                    format=fmt,
                    trusted_types=trusted,
                    reference=sample,
                    lineage=lineage,
                    signature=signature,
                    metrics=metrics or {},
                    card_notes=card_notes,
                )
            )
            aliases = [alias] if alias else []
            if latest is None and DEFAULT_ALIAS not in aliases:
                aliases.append(DEFAULT_ALIAS)
            for each in aliases:
                self._point_alias(session, model, each, version, actor, f"registered v{version}")
        return ServedVersion(
            name, version, digest, str(relative), signature, feature_index(signature), fmt, tuple(trusted)
        )

    def _reference_sample(self, data: Any, signature: dict[str, Any]) -> list[list[float]]:
        """Up to ``reference_rows`` rows of ``data`` in the model's feature order (a seeded sample)."""
        matrix = np.asarray(in_feature_order(data, signature, "the reference data"), dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != signature["n_features"]:
            raise RegistryError(
                f"the reference data has shape {matrix.shape}; "
                f"the model takes {signature['n_features']} features"
            )
        if len(matrix) > self.reference_rows:
            matrix = matrix[np.random.default_rng(0).choice(len(matrix), self.reference_rows, replace=False)]
        return matrix.tolist()

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

    def _approve_skops_types(self, data: bytes, trust: list[str]) -> list[str]:
        """The non-default types this skops file needs, if every one is trusted; else refuse it."""
        try:
            needed = skops.io.get_untrusted_types(data=data)
        except Exception as exc:
            raise RegistryError(f"not a readable skops file: {type(exc).__name__}: {exc}") from exc
        refused = sorted(set(needed) - self.skops_trusted_types - set(trust))
        if refused:
            raise RegistryError(
                "this skops file holds types that are not trusted: "
                f"{', '.join(refused)}. Inspect them, then register with --trust for each "
                "(or add them to SKOPS_TRUSTED_TYPES)",
                untrusted_types=refused,
            )
        return sorted(needed)

    def _deserialize(self, fmt: str, data: bytes, trusted: list[str] | tuple[str, ...], what: str) -> Any:
        if fmt == "skops":
            # Only the types approved at registration; anything else raises instead of loading.
            return skops.io.loads(data, trusted=list(trusted))
        if not self.allow_pickle:
            raise RegistryError(
                f"{what} is a joblib (pickle) artifact and ALLOW_PICKLE is false; register a .skops file"
            )
        return joblib.load(io.BytesIO(data))

    def set_alias(self, name: str, alias: str, version: int, actor: str = "cli", reason: str = "") -> None:
        """Point ``alias`` at ``version``, recording who did it and why in the audit trail."""
        if not _NAME.match(alias):
            raise InvalidInput(f"alias {alias!r} must match {_NAME.pattern}", alias=alias)
        _existing_name(name)
        with Session(self.engine) as session, session.begin():
            model = session.scalar(select(Model).where(Model.name == name))
            if model is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)
            exists = session.scalar(
                select(ModelVersion.id).where(
                    ModelVersion.model_id == model.id, ModelVersion.version == version
                )
            )
            if exists is None:
                raise VersionNotFound(
                    f"model {name!r} has no version {version}",
                    model=name,
                    version=version,
                )
            self._point_alias(session, model, alias, version, actor, reason)
        with self._resolved_lock:
            self._resolved.clear()

    def set_policy(self, name: str, policy: Policy) -> None:
        """Route requests of NAME by ``policy``; every alias or version it names must exist now."""
        _existing_name(name)
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

    def _policy_uncached(self, name: str) -> Policy:
        _existing_name(name)
        with Session(self.engine) as session:
            spec = session.scalar(select(Model.traffic_policy).where(Model.name == name))
        return traffic.parse(spec)

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS, actor: str = "cli", reason: str = "") -> int:
        """Point ``alias`` back where its last move took it from; returns that version."""
        _existing_name(name)
        with Session(self.engine) as session:
            last = session.scalar(
                select(AliasEvent)
                .where(AliasEvent.model_name == name, AliasEvent.alias == alias)
                .order_by(AliasEvent.id.desc())
                .limit(1)
            )
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
        _existing_name(name)
        with self.engine.connect() as conn:
            if conn.scalar(select(Model.id).where(Model.name == name)) is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)

    @staticmethod
    def _point_alias(
        session: Session, model: Model, alias: str, version: int, actor: str, reason: str
    ) -> None:
        row = session.get(ModelAlias, (model.id, alias))
        previous = row.version if row is not None else None
        if row is None:
            session.add(ModelAlias(model_id=model.id, alias=alias, version=version))
        else:
            row.version, row.updated_at = version, utcnow()
        session.add(
            AliasEvent(
                model_name=model.name,
                alias=alias,
                from_version=previous,
                to_version=version,
                actor=actor,
                reason=reason,
            )
        )

    # -- reading -----------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> ServedVersion:
        """The version a request for ``name`` should be served by (champion by default)."""
        return self._resolve_cached(name, version, alias)

    def _resolve_uncached(self, name: str, version: int | None, alias: str | None) -> ServedVersion:
        _existing_name(name)
        if alias is not None and not _NAME.match(alias):
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
            )

    def load(self, name: str, version: int) -> tuple[Any, ServedVersion]:
        """The estimator for ``name``/``version``, loaded once per process after a sha256 check."""
        served = self.resolve(name, version=version)
        cached = self._loaded.get((name, version))
        if cached is not None and cached[0] == served.sha256:
            return cached[1], served
        data = (self.artifact_root / served.artifact_path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != served.sha256:
            raise ArtifactIntegrityError(
                f"artifact of {name} v{version} has sha256 {digest[:12]}…, registry says "
                f"{served.sha256[:12]}…; refusing to load it",
                model=name,
                version=version,
            )
        # Deserialize the very bytes that were hashed, so the file cannot change in between.
        estimator = self._deserialize(served.format, data, served.trusted_types, what=f"{name} v{version}")
        self._loaded[(name, version)] = (digest, estimator)
        return estimator, served

    def list_models(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            models = session.scalars(
                select(Model)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
                .order_by(Model.name)
            ).all()
            return [_describe(m) for m in models]

    def describe(self, name: str) -> dict[str, Any]:
        _existing_name(name)
        with Session(self.engine) as session:
            model = session.scalar(
                select(Model)
                .where(Model.name == name)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
            )
            if model is None:
                raise ModelNotFound(f"no model named {name!r}", model=name)
            return _describe(model)


def _existing_name(name: str) -> None:
    """Refuse, before any query, a name no registered model can have (say, one holding NUL)."""
    if not _NAME.match(name):
        raise ModelNotFound(f"no model named {name!r}", model=name)


def _describe(model: Model) -> dict[str, Any]:
    aliases = {a.alias: a.version for a in model.aliases}
    return {
        "name": model.name,
        "created_at": model.created_at,
        "aliases": aliases,
        "traffic_policy": traffic.parse(model.traffic_policy).as_dict(),
        "retraining": {"every_seconds": model.retrain_every_seconds, "on_drift": model.retrain_on_drift},
        "versions": [
            {
                "version": v.version,
                "sha256": v.sha256,
                "format": v.format,
                "signature": v.signature,
                "lineage": v.lineage,
                "metrics": v.metrics,
                "aliases": sorted(a for a, ver in aliases.items() if ver == v.version),
                "created_at": v.created_at,
            }
            for v in model.versions
        ],
    }
