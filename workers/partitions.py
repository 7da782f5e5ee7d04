"""The sweeper's day partitions (PostgreSQL): made ahead, and dropped whole once past retention.

Each sweep makes sure ``jobs`` and ``batches`` have a partition for today and the next
PARTITION_DAYS_AHEAD days (app/db/partitions.py). A day whose end is older than
JOB_RETENTION_SECONDS goes in one short transaction: DETACH, then DROP, which frees its
bytes at once instead of leaving a DELETE's dead rows to autovacuum. (DETACH ...
CONCURRENTLY would take a weaker lock, but PostgreSQL refuses it on a table with a DEFAULT
partition, which predq keeps so that an insert never fails: the plain DETACH waits at most
LOCK_TIMEOUT for its lock, since every query on the table queues behind it meanwhile, and
is tried LOCK_TRIES times; else the day waits for the next sweep. Making a day ahead alike.)

Queued and running jobs are never deleted, however old, and a finished job is kept until it
is past retention itself: such jobs in a day due to go (stragglers) are read after DETACH,
under its lock, and copied to the default partition in the same transaction (the metric
``predq_partition_stragglers_moved_total`` counts them); the default's rows go by age in
batches (workers/retention.py). A day of jobs waits while one of its jobs that goes with it still
has its Idempotency-Key (retention deletes those first), so a key never outlives its job; a
straggler keeps its key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from app.db import Job, utcnow
from app.db.partitions import PARTITIONED, Partition, create_day, day_of, partitions
from app.metrics import PARTITION_DROP_WAITS, PARTITION_STRAGGLERS, PARTITIONS_DROPPED, PARTITIONS_NOT_MADE
from app.predictions.view import FINISHED, JobStatus
from app.services import Services

log = logging.getLogger(__name__)

#: Longest one try of a DETACH or CREATE waits for its lock: while it waits, every query on
#: the table queues behind it, so it is short and tried again (LOCK_TRIES) after a pause in
#: which those queries run; still not granted, the day waits for the next sweep.
LOCK_TIMEOUT = "150ms"
LOCK_TRIES = 4
LOCK_PAUSE_SECONDS = 0.2

_COLUMNS = ", ".join(f'"{c.name}"' for c in Job.__table__.columns)
#: A job that must not go with its day (a straggler): still queued or running, or finished
#: within retention. Each term is one an index answers (jobs' status btree, the BRIN on
#: completed_at of migration 0022), because it is read under DETACH's lock, while every query
#: on jobs waits: a scan of the whole day there would stall the service for as long as it took.
_UNFINISHED = " OR ".join(
    [
        f"status IN ({', '.join(repr(str(s)) for s in JobStatus if s not in FINISHED)})",
        "completed_at IS NULL",
        "completed_at >= :cutoff",
    ]
)


def maintain(svc: Services) -> dict[str, int]:
    """Partitions made ahead and days past retention dropped; nothing on SQLite."""
    if svc.engine.dialect.name != "postgresql":
        return {}
    settings = svc.settings
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.job_retention_seconds)
    done = {"partitions_created": 0, "partitions_dropped": 0, "stragglers_moved": 0}
    for table in PARTITIONED:
        done["partitions_created"] += make_ahead(
            svc.engine, table, day_of(now), settings.partition_days_ahead
        )
        if settings.job_retention_seconds > 0:
            dropped, moved = drop_past(svc.engine, table, cutoff)
            done["partitions_dropped"] += dropped
            done["stragglers_moved"] += moved
    return done


def make_ahead(engine: Engine, table: str, today: datetime, ahead: int) -> int:
    """Create ``table``'s partitions for ``today`` and ``ahead`` days after; returns how many.

    A day some partition covers already is skipped, and so is one whose rows went to the
    default partition meanwhile (the sweeper was down): PostgreSQL would refuse it, and the
    default keeps that day, its rows deleted by age.
    """
    with engine.connect() as conn:
        existing = partitions(conn, table)
    made = 0
    for offset in range(ahead + 1):
        day = today + timedelta(days=offset)
        if any(_covers(part, day) for part in existing):
            continue
        try:
            made += locked(engine, partial(_create_unless_in_default, table=table, day=day))
        except DBAPIError as exc:  # its lock not granted, a row of that day landed in the default
            PARTITIONS_NOT_MADE.labels(table).inc()
            log.warning("could not make %s's partition of %s: %s", table, day.date(), exc.orig)
    return made


def _create_unless_in_default(conn: Connection, table: str, day: datetime) -> int:
    in_default = conn.execute(
        text(f"SELECT 1 FROM {table}_default WHERE created_at >= :day AND created_at < :after LIMIT 1"),
        {"day": day, "after": day + timedelta(days=1)},
    ).first()
    if in_default is not None:
        return 0
    create_day(conn, table, day)
    return 1


def _covers(part: Partition, day: datetime) -> bool:
    if part.is_default or part.upper is None:
        return False
    return (part.lower is None or part.lower <= day) and day < part.upper


def drop_past(engine: Engine, table: str, cutoff: datetime) -> tuple[int, int]:
    """Drop ``table``'s bounded partitions whose end is at or before ``cutoff``, oldest first;
    returns how many went and how many stragglers were moved to the default partition."""
    with engine.connect() as conn:
        due = sorted(
            (p for p in partitions(conn, table) if p.upper is not None and p.upper <= cutoff),
            key=lambda p: p.upper or cutoff,
        )
    dropped = moved = 0
    for part in due:
        assert part.upper is not None
        if table == "jobs" and _keys_older_than(engine, part.name, cutoff):
            PARTITION_DROP_WAITS.labels(table).inc()
            log.info("%s waits: Idempotency-Keys of its jobs are still stored", part.name)
            break
        try:
            stragglers = _drop(engine, table, part.name, cutoff)
        except OperationalError as exc:
            if not lock_busy(exc):
                raise  # not a lock wait: the sweep fails loudly rather than waiting for ever
            PARTITION_DROP_WAITS.labels(table).inc()
            log.warning("could not drop %s yet: %s", part.name, exc.orig)
            break
        dropped += 1
        moved += stragglers
        PARTITIONS_DROPPED.labels(table).inc()
        PARTITION_STRAGGLERS.labels(table).inc(stragglers)
        log.info("dropped %s (%d stragglers moved to the default partition)", part.name, stragglers)
    return dropped, moved


def locked(engine: Engine, work: Callable[[Connection], int]) -> int:
    """``work`` in a transaction of its own whose locks are waited for at most LOCK_TIMEOUT,
    tried up to LOCK_TRIES times; the last lock timeout is raised (:func:`lock_busy`)."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                return work(conn)
        except OperationalError as exc:
            if not lock_busy(exc) or attempt == LOCK_TRIES:
                raise
            time.sleep(LOCK_PAUSE_SECONDS)
    raise AssertionError("unreachable")


def lock_busy(exc: OperationalError) -> bool:
    """Whether ``exc`` is a lock not granted within lock_timeout (SQLSTATE 55P03): the table is
    busy now and the next sweep tries again. Any other error is not a reason to wait."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"


def _keys_older_than(engine: Engine, name: str, cutoff: datetime) -> bool:
    """Whether a job of partition ``name`` that goes with it (not a straggler) still has its
    Idempotency-Key (retention deletes those first). A straggler's key stays: its job is moved."""
    keyed = (
        f"SELECT 1 FROM idempotency_keys k JOIN {name} j ON j.id = k.job_id AND j.created_at = k.created_at "
        f"WHERE NOT ({_UNFINISHED}) LIMIT 1"
    )
    with engine.connect() as conn:
        return conn.execute(text(keyed), {"cutoff": cutoff}).first() is not None


def stragglers(name: str) -> str:
    """The SELECT of the jobs of partition ``name`` that must not go with it (bind ``:cutoff``)."""
    return f"SELECT {_COLUMNS} FROM {name} WHERE {_UNFINISHED}"


def _drop(engine: Engine, table: str, name: str, cutoff: datetime) -> int:
    """DETACH and DROP partition ``name`` in one transaction, its stragglers copied into the
    parent in between (their day no longer has a partition: they land in the default); returns
    how many were copied.

    The stragglers are read after DETACH, under its ACCESS EXCLUSIVE lock on the partition:
    no row can be written into the day between that read and the DROP (a deferred job's row
    is written only when its worker finishes, at any moment). The lock is taken by DETACH
    itself, parent then partition, the order every insert takes them in: locking the
    partition first would deadlock with an insert holding the parent.
    """

    def detach_and_drop(conn: Connection) -> int:
        conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {name}"))
        moved = 0
        if table == "jobs":
            copy = f"INSERT INTO {table} ({_COLUMNS}) {stragglers(name)}"
            moved = conn.execute(text(copy), {"cutoff": cutoff}).rowcount
        conn.execute(text(f"DROP TABLE {name}"))
        return int(moved)

    return locked(engine, detach_and_drop)
