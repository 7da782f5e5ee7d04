"""Alembic environment: the database comes from app.config, the schema from app.db."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from app.config import Settings
from app.db import Base, make_engine
from app.db.partitions import is_partition

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

database_url = config.attributes.get("database_url") or Settings.from_env().database_url
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares the partitioned parents only: their partitions are the sweeper's."""
    return not (type_ == "table" and name is not None and is_partition(name))


def run_migrations_offline() -> None:
    context.configure(
        url=database_url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        # Batch mode lets later ALTERs work on SQLite too.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
