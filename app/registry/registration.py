"""Registering a version: the artifact checked, stored beside its row, its first aliases set.

Two formats. joblib is pickle: loading one runs whatever code it holds, so only register
artifacts you would run as code (``ALLOW_PICKLE=false`` refuses them altogether). skops
restores only types it trusts: registration lists the types a file needs beyond skops'
defaults and refuses it unless each is trusted (``SKOPS_TRUSTED_TYPES`` or ``--trust``);
loading then allows exactly the types approved at registration (:func:`deserialize`).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np
import skops.io
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.db import Model, ModelVersion
from app.errors import ArtifactIntegrityError, RegistryError, VersionNotFound
from app.registry.aliases import point_alias
from app.registry.signature import feature_index, in_feature_order, signature_of
from app.registry.versions import DEFAULT_ALIAS, NAME, ServedVersion
from app.storage import Artifacts


class ArtifactStore(Protocol):
    """What registering needs of the registry (app/registry/registry.py's Registry is one):
    its database, where artifacts go (ARTIFACT_ROOT, app/storage/), and the rules a file must pass."""

    engine: Engine
    artifacts: Artifacts
    allow_pickle: bool
    skops_trusted_types: set[str]
    reference_rows: int


FORMATS = {".skops": "skops"}  # by file suffix; anything else is joblib


def register(
    registry: ArtifactStore,
    name: str,
    source: str | Path,
    *,
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
    ``reference``: training inputs (array or DataFrame); a sample of up to the registry's
    ``reference_rows`` rows is kept as the baseline for drift checks.
    """
    if not NAME.fullmatch(name):
        raise RegistryError(f"model name {name!r} must match {NAME.pattern}")
    if alias is not None and not NAME.fullmatch(alias):
        raise RegistryError(f"alias {alias!r} must match {NAME.pattern}")
    data = Path(source).read_bytes()
    fmt = FORMATS.get(Path(source).suffix.lower(), "joblib")
    trusted = (
        approve_skops_types(data, registry.skops_trusted_types | set(trust or [])) if fmt == "skops" else []
    )
    estimator = deserialize(fmt, data, trusted, allow_pickle=registry.allow_pickle, what=str(source))
    if not hasattr(estimator, "predict"):
        raise RegistryError(f"{source} holds a {type(estimator).__name__}, which has no predict()")
    try:
        signature = signature_of(estimator)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    sample = (
        reference_sample(reference, signature, registry.reference_rows) if reference is not None else None
    )
    digest = hashlib.sha256(data).hexdigest()

    with Session(registry.engine) as session, session.begin():
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
        # The bytes that were hashed and checked, not the file again (it may have changed);
        # uploaded once, before the row commits: a row never names an artifact not stored.
        registry.artifacts.put(str(relative), data)
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
            point_alias(session, model, each, version, actor, f"registered v{version}")
    return ServedVersion(
        name, version, digest, str(relative), signature, feature_index(signature), fmt, tuple(trusted)
    )


def reference_sample(data: Any, signature: dict[str, Any], max_rows: int) -> list[list[float]]:
    """Up to ``max_rows`` rows of ``data`` in the model's feature order (a seeded sample)."""
    matrix = np.asarray(in_feature_order(data, signature, "the reference data"), dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != signature["n_features"]:
        raise RegistryError(
            f"the reference data has shape {matrix.shape}; the model takes {signature['n_features']} features"
        )
    if len(matrix) > max_rows:
        matrix = matrix[np.random.default_rng(0).choice(len(matrix), max_rows, replace=False)]
    return matrix.tolist()


def approve_skops_types(data: bytes, trusted: set[str]) -> list[str]:
    """The non-default types this skops file needs, if every one is ``trusted``; else refuse it."""
    try:
        needed = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise RegistryError(f"not a readable skops file: {type(exc).__name__}: {exc}") from exc
    refused = sorted(set(needed) - trusted)
    if refused:
        raise RegistryError(
            "this skops file holds types that are not trusted: "
            f"{', '.join(refused)}. Inspect them, then register with --trust for each "
            "(or add them to SKOPS_TRUSTED_TYPES)",
            untrusted_types=refused,
        )
    return sorted(needed)


def deserialize(
    fmt: str, data: bytes, trusted: list[str] | tuple[str, ...], *, allow_pickle: bool, what: str
) -> Any:
    """The estimator in ``data``: skops with only the ``trusted`` types, joblib when pickle is allowed."""
    if fmt == "skops":
        # Only the types approved at registration; anything else raises instead of loading.
        return skops.io.loads(data, trusted=list(trusted))
    if not allow_pickle:
        raise RegistryError(
            f"{what} is a joblib (pickle) artifact and ALLOW_PICKLE is false; register a .skops file"
        )
    return joblib.load(io.BytesIO(data))


def store_compiled(
    registry: ArtifactStore, name: str, version: int, record: dict[str, Any] | None, onnx: bytes | None
) -> None:
    """Record a version's compiled backend (None: back to scikit-learn alone); with ``onnx``, the
    ONNX artifact is stored beside the model, named by its sha256, and the record points at it.

    Named by digest, never overwritten: a process still holding the previous record reads
    the file that record names, so a recompile never fails a batch's integrity check.
    """
    if onnx is not None and record is not None:
        digest = hashlib.sha256(onnx).hexdigest()
        relative = Path(name) / str(version) / f"model-{digest[:16]}.onnx"
        registry.artifacts.put(str(relative), onnx)  # a whole file or none (DESIGN, Durable first)
        record = record | {"artifact_path": str(relative), "sha256": digest}
    with Session(registry.engine) as session, session.begin():
        model_id = session.scalar(select(Model.id).where(Model.name == name))
        updated = session.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model_id, ModelVersion.version == version)
            .values(compiled=record)
        )
        if not updated.rowcount:  # type: ignore[attr-defined]
            raise VersionNotFound(f"model {name!r} has no version {version}", model=name, version=version)


def verified_bytes(artifacts: Artifacts, path: str, sha256: str, served: ServedVersion) -> bytes:
    """An artifact's bytes (a model's or its ONNX file's), refused unless their sha256 is the
    registry's (from this host's disk cache or the store: app/storage/artifacts.py)."""
    data, digest = artifacts.fetch(path, sha256)
    if digest != sha256:
        raise ArtifactIntegrityError(
            f"artifact {Path(path).name} of {served.name} v{served.version} has sha256 {digest[:12]}…,"
            f" registry says {sha256[:12]}…; refusing to load it",
            model=served.name,
            version=served.version,
        )
    return data
