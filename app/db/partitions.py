"""PostgreSQL's day partitions of ``jobs`` and ``batches``: their names, listing and creation.

Each table is partitioned by RANGE on ``created_at`` (migration 0021): ``<table>_pYYYYMMDD``
holds one UTC day, ``<table>_default`` whatever no day partition covers (so an insert never
fails when the sweeper was down), and ``<table>_legacy`` the rows stored before the
conversion, up to the day it ran. The sweeper (workers/partitions.py) creates days ahead
and drops those past retention; SQLite has plain tables and none of this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text

#: The tables partitioned by day on PostgreSQL.
PARTITIONED = ("jobs", "batches")

_NAMES = re.compile(rf"^({'|'.join(PARTITIONED)})_(p\d{{8}}|default|legacy)$")
_NAMES_OF_DAYS = re.compile(r"^\w+_p\d{8}$")
_BOUNDS = re.compile(r"FROM \((.+)\) TO \((.+)\)")


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the partitions (the models describe only their parents)."""
    return _NAMES.match(name) is not None


def day_of(moment: datetime) -> datetime:
    """The start (UTC midnight) of the day ``moment`` falls in."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day_name(table: str, day: datetime) -> str:
    return f"{table}_p{day:%Y%m%d}"


@dataclass(frozen=True)
class Partition:
    """One partition: ``lower``/``upper`` its range (None: MINVALUE; both None: the default)."""

    name: str
    lower: datetime | None
    upper: datetime | None

    @property
    def is_default(self) -> bool:
        return self.lower is None and self.upper is None


def partitions(conn: Connection, table: str) -> list[Partition]:
    """``table``'s partitions as the catalog has them, in no order."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": table},
    ).all()
    return [Partition(name, *_bounds(bound)) for name, bound in rows]


def _bounds(bound: str) -> tuple[datetime | None, datetime | None]:
    found = _BOUNDS.search(bound)
    if found is None:  # DEFAULT
        return None, None
    lower, upper = (None if b == "MINVALUE" else datetime.fromisoformat(b.strip("'")) for b in found.groups())
    return lower, upper


def create_day(conn: Connection, table: str, day: datetime) -> None:
    """The partition of ``table`` for ``day`` (a UTC midnight), made as a table of its own with
    a CHECK of its range, then attached: ATTACH takes SHARE UPDATE EXCLUSIVE on the parent
    (inserts and reads go on), where CREATE TABLE ... PARTITION OF took ACCESS EXCLUSIVE. The
    CHECK spares ATTACH a scan of the new table; it still scans the default partition under
    that partition's exclusive lock, and fails when the default holds rows of that day."""
    name, after = day_name(table, day), day + timedelta(days=1)
    if conn.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
        return  # made already (the call is idempotent, as CREATE TABLE IF NOT EXISTS was)
    lower, upper = f"'{day.isoformat()}'", f"'{after.isoformat()}'"
    conn.execute(text(f"CREATE TABLE {name} (LIKE {table} INCLUDING ALL)"))
    conn.execute(
        text(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_range "
            f"CHECK (created_at >= {lower} AND created_at < {upper})"
        )
    )
    conn.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})"))


def undivided(conn: Connection, table: str) -> list[str]:
    """``table``'s partitions that are not days (the default, the legacy one): retention deletes
    their old rows in batches, as it does on SQLite, since they cannot be dropped a day at a time."""
    return sorted(part.name for part in partitions(conn, table) if not _NAMES_OF_DAYS.match(part.name))
