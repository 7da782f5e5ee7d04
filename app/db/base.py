"""The declarative base, engine creation and the helpers every query module shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Each supported dialect's insert(): ON CONFLICT is spelled by each dialect's own.
INSERT_BY_DIALECT: dict[str, Any] = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


def dialect_insert(conn: Any) -> Any:
    """The insert() of ``conn``'s dialect (PostgreSQL or SQLite)."""
    return INSERT_BY_DIALECT[conn.dialect.name]


def newest_rows(
    engine: Engine, table: Any, model_name: str, order_by: Any, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``table`` for one model (newest first, by ``order_by``), as dicts."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.__table__)
            .where(table.model_name == model_name)
            .order_by(order_by.desc())
            .limit(limit)
        ).mappings()
        return [dict(row) for row in rows]


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp read back with its UTC offset on SQLite too, which stores none.

    Every timestamp predq writes is UTC (utcnow); without the offset the API would show
    SQLite's as local times, which RFC 3339 (OpenAPI's date-time) does not allow.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    # Stable constraint names so migrations look the same on PostgreSQL and SQLite.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}


def _json_dumps(value: Any) -> str:
    # A many-row job's inputs are a float64 matrix: the same JSON as its rows as lists would be.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str, pool_size: int = 32) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so API and workers share it.

    PostgreSQL: no pre-ping (it costs a round trip per checkout; a dead connection raises
    once, the pool is invalidated, and the request answers 503), and a pool as large as
    the threads that use it, so connections are reused instead of reopened.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_json_dumps)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 4,
        pool_recycle=1800,
        # Job inputs and outputs are JSON columns written on every request and batch.
        json_serializer=_json_dumps,
    )
    event.listen(engine, "connect", _lz4_toast)
    return engine


def _lz4_toast(dbapi_conn: Any, _record: Any) -> None:
    """Compress this connection's large values (a many-row job's inputs and outputs) with lz4,
    not PostgreSQL's default pglz, which took 2-3 times as long to insert a 1,000-row job (JSON
    of random floats, which neither shrinks by much). Old rows read as before; a server
    without lz4 (before 14, or built without it) keeps pglz."""
    try:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET default_toast_compression = 'lz4'")
        dbapi_conn.commit()
    except Exception:  # psycopg's error for an unknown parameter or value; the connection goes on
        dbapi_conn.rollback()
