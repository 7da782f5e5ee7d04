"""Aliases: movable names (``champion``, ``challenger``, …) for a model's versions. Every
move is an ``alias_events`` row saying who moved it and why, which rollbacks read back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.db import AliasEvent, Model, ModelAlias, ModelVersion, utcnow
from app.errors import InvalidInput, ModelNotFound, VersionNotFound
from app.registry.versions import NAME, existing_name


def set_alias(engine: Engine, name: str, alias: str, version: int, actor: str, reason: str) -> None:
    """Point ``alias`` at an existing ``version`` of ``name``, recording the move."""
    if not NAME.fullmatch(alias):
        raise InvalidInput(f"alias {alias!r} must match {NAME.pattern}", alias=alias)
    existing_name(name)
    with Session(engine) as session, session.begin():
        model = session.scalar(select(Model).where(Model.name == name))
        if model is None:
            raise ModelNotFound(f"no model named {name!r}", model=name)
        exists = session.scalar(
            select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
        )
        if exists is None:
            raise VersionNotFound(f"model {name!r} has no version {version}", model=name, version=version)
        point_alias(session, model, alias, version, actor, reason)


def point_alias(session: Session, model: Model, alias: str, version: int, actor: str, reason: str) -> None:
    """Move (or create) ``alias`` within ``session``'s transaction, with its audit row."""
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


def last_move(engine: Engine, name: str, alias: str) -> AliasEvent | None:
    """The newest move of ``alias`` (None when it never moved)."""
    existing_name(name)
    with Session(engine) as session:
        return session.scalar(
            select(AliasEvent)
            .where(AliasEvent.model_name == name, AliasEvent.alias == alias)
            .order_by(AliasEvent.id.desc())
            .limit(1)
        )
