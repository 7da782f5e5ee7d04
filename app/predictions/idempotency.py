"""Idempotency-Keys: a retried submit finds the job its first try stored.

A key is its API key's alone (stored as ``<key id>:<key>``); the job row keeps a hash of
what the client sent, so the same key with another body is a 409, not a replay.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select

from app.db import Job
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


def find_by_key(svc: Services, key: str) -> dict[str, Any] | None:
    with svc.engine.connect() as conn:
        row = conn.execute(select(Job.__table__).where(Job.idempotency_key == key)).mappings().first()
    return dict(row) if row is not None else None


def replay(existing: dict[str, Any], request_hash: str | None, key: str) -> dict[str, Any]:
    if existing["request_hash"] != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body",
            idempotency_key=key,
            job_id=str(existing["id"]),
        )
    return job_view(existing)
