"""Job ids that carry their time: a UUIDv7 (RFC 9562) and the ``created_at`` it names.

On PostgreSQL ``jobs`` is partitioned by day on ``created_at`` and has no global index on
``id`` (a partitioned table's keys include its partition key), so a read by id alone probes
every day's index. A job's ``created_at`` is the millisecond its id was made, exactly, so
every read by id also says ``created_at = <the id's time>`` and PostgreSQL prunes to the one
partition that holds it: one index lookup, as before partitioning. Ids made before UUIDv7
(version 4, random) name no time: those are read by id alone, every partition's index.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import uuid_utils
from sqlalchemy import ColumnElement, and_

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_id() -> tuple[uuid.UUID, datetime]:
    """A new UUIDv7 and the time it names (UTC, millisecond precision): the row's ``created_at``."""
    made = uuid_utils.uuid7()
    return uuid.UUID(int=made.int), _EPOCH + timedelta(milliseconds=made.timestamp)


def time_of(any_id: uuid.UUID) -> datetime | None:
    """The time a UUIDv7 names (its ``created_at``); None for any other version (uuid4)."""
    if any_id.version != 7:
        return None
    return _EPOCH + timedelta(milliseconds=uuid_utils.UUID(int=any_id.int).timestamp)


def times_of(ids: Iterable[uuid.UUID]) -> list[datetime] | None:
    """The times every id names, or None when one of them names none (a uuid4's)."""
    times = []
    for any_id in ids:
        found = time_of(any_id)
        if found is None:
            return None
        times.append(found)
    return times


def by_id(table: Any, any_id: uuid.UUID) -> ColumnElement[bool]:
    """``table`` (Job) row ``any_id``: with its time when the id names one (one partition)."""
    created_at = time_of(any_id)
    if created_at is None:
        return table.id == any_id
    return and_(table.id == any_id, table.created_at == created_at)


def by_ids(table: Any, ids: list[uuid.UUID]) -> ColumnElement[bool]:
    """``table`` rows whose id is in ``ids``: with their times when all name one (only their partitions)."""
    times = times_of(ids)
    if times is None:
        return table.id.in_(ids)
    return and_(table.id.in_(ids), table.created_at.in_(sorted(set(times))))
