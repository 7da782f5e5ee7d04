"""Idempotency-Keys: a retried submit finds the job its first try stored.

A key is its API key's alone (stored as ``<key id>:<key>``); the job row keeps a hash of
what the client sent, so the same key with another body is a 409, not a replay.

Keys live in a table of their own (``idempotency_keys``: the key, its job's id and
created_at), not in a unique column of ``jobs``: on PostgreSQL ``jobs`` is partitioned by day
and a unique constraint there would have to include the day. The key's row is written in the
same statement as its job's (:func:`store_job`), so a key never names a job that is not stored.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, delete, exists, insert, literal, select

from app.db import IdempotencyKey, Job
from app.errors import IdempotencyConflict
from app.predictions.view import job_view
from app.services import Services


def request_hash_of(
    name: str, version: int | None, alias: str | None, routing_key: str | None, inputs: list[Any]
) -> str:
    body = {"model": name, "version": version, "alias": alias, "routing_key": routing_key, "inputs": inputs}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def owned_key(key: str, owner: int | None) -> str:
    """The Idempotency-Key as stored: each API key has its own (the column has room for the prefix)."""
    return key if owner is None else f"{owner}:{key}"


# Built once; the join names the job's created_at too, so PostgreSQL reads one partition.
_FIND = (
    select(Job.__table__)
    .join(IdempotencyKey, and_(Job.id == IdempotencyKey.job_id, Job.created_at == IdempotencyKey.created_at))
    .where(IdempotencyKey.key == bindparam("key"))
)
# A key whose job is gone (past retention, deleted by hand) while the key stayed: it names no
# job, so a replay could neither find its job nor store one (the key taken) until it went.
_FREE_ORPHANED = delete(IdempotencyKey).where(
    IdempotencyKey.key == bindparam("key"),
    ~exists().where(Job.id == IdempotencyKey.job_id, Job.created_at == IdempotencyKey.created_at),
)
_INSERT_JOB = insert(Job)
_INSERT_KEY = insert(IdempotencyKey)


def find_by_key(svc: Services, key: str) -> dict[str, Any] | None:
    """The job a key made, or None (never used, or past retention)."""
    with svc.engine.connect() as conn:
        row = conn.execute(_FIND, {"key": key}).mappings().first()
    return dict(row) if row is not None else None


def free_orphaned_key(svc: Services, key: str) -> bool:
    """Delete ``key`` if its job is gone (True); a key whose job exists (stored again by a
    concurrent replay meanwhile) is left as it is."""
    with svc.engine.begin() as conn:
        return conn.execute(_FREE_ORPHANED, {"key": key}).rowcount > 0


def store_job(conn: Connection, record: dict[str, Any], key: str | None) -> None:
    """Insert the job's row and, with ``key``, its key's (IntegrityError: the key is taken).

    PostgreSQL: one statement (the job's INSERT in a CTE, the key's from what it returned), so
    a keyed submit costs the one round trip an unkeyed one does. SQLite: two statements, in
    the caller's transaction.
    """
    if key is None:
        conn.execute(_INSERT_JOB, record)
    elif conn.dialect.name == "postgresql":
        job = insert(Job).values(record).returning(Job.id, Job.created_at).cte("job")
        columns = ["key", "job_id", "created_at"]
        conn.execute(
            insert(IdempotencyKey).from_select(columns, select(literal(key), job.c.id, job.c.created_at))
        )
    else:
        conn.execute(_INSERT_JOB, record)
        conn.execute(_INSERT_KEY, {"key": key, "job_id": record["id"], "created_at": record["created_at"]})


def replay(existing: dict[str, Any], request_hash: str | None, key: str) -> dict[str, Any]:
    if existing["request_hash"] != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body",
            idempotency_key=key,
            job_id=str(existing["id"]),
        )
    return job_view(existing)
