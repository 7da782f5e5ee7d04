"""The stored road: the job's row first, then its rows queued (see app/predictions/submit.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from app import logs, throughput
from app.db.ids import new_id
from app.errors import PredqError, ServiceUnavailable
from app.metrics import CACHE_HITS, CACHE_MISSES, JOBS
from app.predictions import cache
from app.predictions.idempotency import find_by_key, free_orphaned_key, replay, store_job
from app.predictions.items import encode_item, encode_view
from app.predictions.jobs import wait_for
from app.predictions.queue import RowQueue, enqueue
from app.predictions.submission import Peek, Submission, job_record, overloaded
from app.predictions.view import JobStatus, job_view
from app.registry import traffic
from app.services import Services
from app.webhooks import outbox

log = logging.getLogger(__name__)


def submit_stored(svc: Services, sub: Submission, peek: Peek) -> dict[str, Any]:
    """The stored road: the job's row first (finished at once when every row is cached), then
    its rows queued."""
    cached, queued_jobs = peek
    all_cached = all(c is not None for c in cached)
    if not all_cached and queued_jobs >= svc.settings.max_queued_jobs:
        raise overloaded(sub.name, sub.version, queued_jobs)
    job_id, created_at = new_id()  # a UUIDv7: its time is the row's created_at (app/db/ids.py)
    record = job_record(
        job_id,
        sub.name,
        sub.version,
        sub.rows,
        cached,
        request_hash=sub.request_hash,
        created_at=created_at,
        owner=sub.owner,
        explain=sub.explain,
        priority=sub.priority,
        deadline=sub.deadline(created_at),
        callback_url=sub.callback_url,
    )
    # A database that cannot be reached raises here, before anything is queued; the
    # error handler in app/errors.py answers 503 for it.
    existing = _insert_or_find(svc, record, all_cached, sub)
    if existing is not None:
        return replay(existing, sub.request_hash, sub.idempotency_key or "")

    view = job_view(record)
    logs.bind(job_id=view["id"], model=sub.name, version=sub.version)
    if sub.shadow is not None:
        _shadow(svc, sub.name, sub.shadow, sub.version, view, sub.rows)
    hits = record["cached_rows"]
    CACHE_HITS.labels(sub.name).inc(hits)
    CACHE_MISSES.labels(sub.name).inc(len(sub.rows) - hits)
    if all_cached:
        JOBS.labels(sub.name, str(sub.version), JobStatus.SUCCEEDED).inc()
        _publish_result(svc, view, sub.owner)
        return view
    _queue_rows(svc, sub, view, cached, record["deadline"])
    if sub.wait > 0:
        # Just stored, so nothing to read first: wait for the worker's hand-off.
        view = wait_for(svc, view["id"], sub.wait) or view
    return view


def _insert_or_find(
    svc: Services, record: dict[str, Any], finished: bool, sub: Submission
) -> dict[str, Any] | None:
    """Store the job (None), or the job its Idempotency-Key already names (another request
    with the key won the race). A key taken whose job is gone (the key went between our
    failed insert and the read, or its job went and the key stayed) names no job: the key
    goes if it is still there and the insert is tried once more, the key free by then."""
    for _ in range(2):
        try:
            _insert(svc, record, finished, sub.stored_key)
            return None
        except IntegrityError:
            if sub.request_hash is None or sub.stored_key is None:
                raise
            existing = find_by_key(svc, sub.stored_key)
            if existing is not None:
                return existing
            if free_orphaned_key(svc, sub.stored_key):
                log.warning("an Idempotency-Key named a job that is gone; its job is stored again")
    raise ServiceUnavailable("the Idempotency-Key's job could not be stored or found; retry", retry_after=1)


def _insert(svc: Services, record: dict[str, Any], finished: bool, key: str | None) -> None:
    """Store the job's row (and its Idempotency-Key's); a job answered from the cache is
    finished, so whoever listens (app/webhooks/) hears of it from an outbox row written in the
    same transaction."""
    owner, callback_url = record["owner_key_id"], record["callback_url"]
    end = outbox.JobEnd(str(record["id"]), JobStatus.SUCCEEDED, owner, callback_url)
    announced = outbox.job_deliveries([end], svc.webhook_endpoints, record["created_at"]) if finished else []
    if announced or (key is not None and svc.engine.dialect.name != "postgresql"):
        with svc.engine.begin() as conn:
            store_job(conn, record, key)
            outbox.write(conn, announced)
        return
    # One statement, autocommitted: one round trip instead of BEGIN/INSERT/COMMIT.
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        store_job(conn, record, key)


def _queue_rows(
    svc: Services, sub: Submission, view: dict[str, Any], cached: list[Any], deadline: datetime | None
) -> None:
    """Push a stored job's uncached rows (with its cached outputs beside them) for a worker."""
    rows = sub.rows
    pending = [i for i, c in enumerate(cached) if c is None]
    partly_cached = len(pending) < len(rows)
    item = encode_item(
        view["id"],
        [rows[i] for i in pending] if partly_cached else rows,
        n_rows=len(rows),
        created_at=view["created_at"],
        slots=pending if partly_cached else None,
        pre={str(i): c for i, c in enumerate(cached) if c is not None} if partly_cached else None,
        request_id=sub.request_id,
        owner=sub.owner,
        explain=sub.explain,
        priority=sub.priority,
        deadline=deadline,
        callback_url=sub.callback_url,
    )
    enqueue(svc, sub.name, sub.version, item, explained=sub.explain is not None, priority=sub.priority)


def peek_at(svc: Services, sub: Submission) -> Peek:
    """Cached outputs of the rows and the queue's depth, in one round trip with the
    request's rate-limit count (raises RateLimited when a limit is spent).

    With no cache keys (the cache is off) nothing is looked up. An explained request's
    depth is that of the version's explained rows' queue.
    """
    n_rows = len(sub.rows)
    try:
        queue = RowQueue(svc.redis, sub.name, sub.version, sub.explain is not None, sub.priority)
        admission = cache.admit(svc, queue, None, sub.keys, rate=sub.rate)
    except RedisError as exc:
        # Redis is the fast path only: compute every row, and queue depth is unknown.
        log.warning("cache unavailable, computing every row: %s", exc)
        return Peek([None] * n_rows, 0)
    cached = cache.cached_outputs(admission.outputs, sub.classes, n_rows) if sub.keys else [None] * n_rows
    return Peek(cached, admission.depth)


def _shadow(
    svc: Services,
    name: str,
    shadow: traffic.Route,
    served_version: int,
    view: dict[str, Any],
    rows: list[Any] | np.ndarray,
) -> None:
    """Queue the same rows for the shadow version; the worker stores its outputs apart.

    Best effort: the job is already stored, so a shadow that cannot be resolved (its alias
    removed) is logged, never turned into an error for the client. Redis losing a shadow
    item loses that comparison only; the sweeper re-queues served jobs, not shadows.
    """
    try:
        target = svc.registry.resolve(name, version=shadow.version, alias=shadow.alias)
    except PredqError as exc:
        log.warning("shadow of %s not queued: %s", name, exc.message)
        return
    if target.version == served_version:
        return  # the shadow is the version serving this request: nothing to compare
    item = encode_item(view["id"], rows, n_rows=len(rows), created_at=view["created_at"], shadow=True)
    enqueue(svc, name, target.version, item)


def _publish_result(svc: Services, view: dict[str, Any], owner: int | None) -> None:
    cache.store_view(svc, view["id"], encode_view(owner, view))
    throughput.count(svc.redis, view["model"]["name"], 1)
