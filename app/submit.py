"""Submitting prediction jobs: the API's side of the work, one function per road.

Every submit is routed (the model's traffic policy picks a version unless the request
names one) and validated first (``_prepared``), then takes one of two roads:

- **stored** (``submit_stored``): answers cached rows from Redis, refuses work when the
  model's queue is too deep (backpressure), commits the job row to the database (the
  source of truth: a 202 means it is stored), then pushes the remaining rows onto the
  model version's Redis list and wakes a worker only if none is taking batches from it.
- **deferred** (``submit_deferred``), for a submit that waits (``?wait=S``) with none of
  its rows cached: one Redis call pushes its rows, and the worker inserts the job row,
  outputs and all, in one statement for its whole batch. Before the client hears of the
  job either the worker has stored it (the answer is the finished job) or, when S passes
  first, this module stores it as queued (the answer is the 202). So every job a client
  is told of is in the database, and the common case costs no database round trip in
  the API and one write per job instead of an insert and an update.

A job's Idempotency-Key is its API key's alone (stored as ``<key id>:<key>``). Reading
jobs back is app/jobs.py.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from redis.exceptions import RedisError
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from app import bulkfiles, logs
from app.db import Job, dialect_insert, utcnow
from app.errors import ExplanationUnsupported, IdempotencyConflict, Overloaded, PayloadTooLarge, PredqError
from app.job_view import JobStatus, job_view
from app.jobs import enqueue, read, wait_for, wake_worker
from app.lifecycle import traffic
from app.metrics import CACHE_HITS, CACHE_MISSES, JOBS
from app.rqueue import RowQueue, cache_keys, encode_item, encode_view, result_key
from app.services import Services
from app.signature import largest_value, rows_to_matrix

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from app.lifecycle.registry import ServedVersion
    from app.ratelimit import RateCharge

log = logging.getLogger(__name__)

# Built once: constructing the statement per request shows up in profiles.
_INSERT_JOB = insert(Job)


@dataclass(frozen=True)
class Submission:
    """A routed, validated request: what either road needs to take it on."""

    name: str
    version: int
    rows: list[list[float]]
    keys: list[str]
    """The rows' cache keys (none when the cache is off)."""
    request_id: str | None
    owner: int | None
    """The submitting API key's id (None with auth off)."""
    explain: str | None
    rate: RateCharge | None
    wait: float
    idempotency_key: str | None = None
    """The client's Idempotency-Key, as sent (None: none sent)."""
    stored_key: str | None = None
    """The Idempotency-Key as stored: its API key's own."""
    request_hash: str | None = None
    shadow: traffic.Route | None = None
    """The version the model's policy shadows, if any: it scores the same rows apart."""


class Peek(NamedTuple):
    """What Redis holds for a submit's rows: their cached outputs (None where missing) and
    how many jobs wait on the model version's queue."""

    cached: list[Any]
    queued_jobs: int


@dataclass(frozen=True)
class Deferred:
    """How the deferred road ended: the job's ``view``, or (a row was cached, or Redis
    failed) a ``peek`` for the stored road to go on from; one of the two is set."""

    view: dict[str, Any] | None = None
    peek: Peek | None = None


def submit(
    svc: Services,
    name: str,
    inputs: list[Any] | pa.Table,
    *,
    version: int | None = None,
    alias: str | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    routing_key: str | None = None,
    wait: float = 0.0,
    rate: RateCharge | None = None,
    owner: int | None = None,
    explain: str | None = None,
) -> dict[str, Any]:
    """Store a job for ``inputs`` (JSON rows, or an Arrow table of the model's features) and
    queue it; returns the job's public view, the finished job's when it finishes within
    ``wait`` seconds. ``rate`` is the request's rate-limit count, sent with the cache lookup
    (RateLimited when spent); ``owner`` the submitting API key's id (None with auth off);
    ``request_id`` names the request in the worker's log; ``explain`` ("predicted" or "all")
    asks for each row's explanation. Routing: see ``_route``.
    """
    served, shadow = _route(svc, name, version, alias, routing_key)
    matrix, hashed = _validated(svc, served, inputs, explain)
    rows = matrix.tolist()
    sub = Submission(
        name,
        served.version,
        rows,
        # With the cache off there is nothing to look up, so no row is hashed.
        cache_keys(name, served.version, matrix, explain) if svc.settings.cache_ttl_seconds > 0 else [],
        request_id,
        owner,
        explain,
        rate,
        wait,
        shadow=shadow,
    )
    if idempotency_key is not None:
        # It hashes what the client sent, not the route drawn for it: a replay may draw another.
        request_hash = _request_hash(name, version, alias, routing_key, rows if hashed is None else hashed)
        sub = _with_key(sub, idempotency_key, request_hash)
        existing = _find_by_key(svc, sub.stored_key or "")
        if existing is not None:
            return _replay(existing, request_hash, idempotency_key)
    if wait > 0 and sub.stored_key is None and not explain and sub.shadow is None:
        # Neither an Idempotency-Key (its row is what finds a replay), a shadow (its outputs
        # refer to the job's row) nor explanations (rare: kept off this road) can wait for
        # the worker to store the job.
        deferred = submit_deferred(svc, sub)
        if deferred.view is not None:
            return deferred.view
        peek = deferred.peek  # set whenever the view is not
    else:
        peek = _peek(svc, sub)
    return submit_stored(svc, sub, peek)


def _route(
    svc: Services, name: str, version: int | None, alias: str | None, routing_key: str | None
) -> tuple[ServedVersion, traffic.Route | None]:
    """The version that serves the request, and the one its model's policy shadows (if any).

    A request naming neither version nor alias is routed by the policy (sticky by
    ``routing_key``); one that names either is served as named, with no shadow.
    """
    if version is not None or alias is not None:
        return svc.registry.resolve(name, version=version, alias=alias), None
    policy = svc.registry.policy(name)
    route = traffic.choose(policy, name, routing_key)
    return svc.registry.resolve(name, version=route.version, alias=route.alias), policy.shadow


def _validated(
    svc: Services, served: ServedVersion, inputs: list[Any] | pa.Table, explain: str | None
) -> tuple[np.ndarray, list[Any] | None]:
    """The rows as the model's float64 matrix, and the JSON rows as sent (None for Arrow:
    an Idempotency-Key then hashes the matrix's rows). Raises 413/422 naming what is wrong."""
    if explain and not served.signature.get("explainer"):
        raise ExplanationUnsupported(
            f"{served.signature.get('estimator', 'this model')} ({served.name} v{served.version}) has no"
            " fast explainer; explanations are computed for tree ensembles, gradient boosting, linear"
            " models and pipelines ending in one (a version registered before explanations existed:"
            " register it again)",
            estimator=served.signature.get("estimator"),
        )
    if explain:
        n_rows = len(inputs) if isinstance(inputs, list) else inputs.num_rows
        _check_explained_rows(n_rows, svc.settings.explain_max_rows)
    if not isinstance(inputs, list):  # an Arrow table: its columns are the features
        return bulkfiles.table_matrix(inputs, served.signature, svc.settings.max_rows_per_request), None
    signature = served.signature
    matrix = rows_to_matrix(
        inputs,
        signature["n_features"],
        served.feature_index,
        svc.settings.max_rows_per_request,
        largest_value(signature),
    )
    return matrix, inputs


def _with_key(sub: Submission, idempotency_key: str, request_hash: str) -> Submission:
    return replace(
        sub,
        idempotency_key=idempotency_key,
        stored_key=_owned_key(idempotency_key, sub.owner),
        request_hash=request_hash,
    )


def submit_stored(svc: Services, sub: Submission, peek: Peek) -> dict[str, Any]:
    """The stored road: the job's row first (finished at once when every row is cached), then
    its rows queued."""
    cached, queued_jobs = peek
    all_cached = all(c is not None for c in cached)
    if not all_cached and queued_jobs >= svc.settings.max_queued_jobs:
        raise _overloaded(sub.name, sub.version, queued_jobs)
    record = _record(
        uuid.uuid4(),
        sub.name,
        sub.version,
        sub.rows,
        cached,
        idempotency_key=sub.stored_key,
        request_hash=sub.request_hash,
        created_at=utcnow(),
        owner=sub.owner,
        explain=sub.explain,
    )
    # A database that cannot be reached raises here, before anything is queued; the
    # error handler in app/errors.py answers 503 for it.
    try:
        # One statement, autocommitted: one round trip instead of BEGIN/INSERT/COMMIT.
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(_INSERT_JOB, record)
    except IntegrityError:
        # Another request with the same Idempotency-Key won the race.
        existing = _find_by_key(svc, sub.stored_key) if sub.stored_key else None
        if existing is None or sub.request_hash is None:
            raise
        return _replay(existing, sub.request_hash, sub.idempotency_key or "")

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
    _queue_rows(svc, sub, view, cached)
    if sub.wait > 0:
        # Just stored, so nothing to read first: wait for the worker's hand-off.
        view = wait_for(svc, view["id"], sub.wait) or view
    return view


def _queue_rows(svc: Services, sub: Submission, view: dict[str, Any], cached: list[Any]) -> None:
    """Push a stored job's uncached rows (with its cached outputs beside them) for a worker."""
    rows = sub.rows
    pending = [i for i, c in enumerate(cached) if c is None]
    partly_cached = len(pending) < len(rows)
    item = encode_item(
        view["id"],
        [rows[i] for i in pending] if partly_cached else rows,
        len(rows),
        view["created_at"],
        slots=pending if partly_cached else None,
        pre={str(i): c for i, c in enumerate(cached) if c is not None} if partly_cached else None,
        request_id=sub.request_id,
        owner=sub.owner,
        explain=sub.explain,
    )
    enqueue(svc, sub.name, sub.version, item, explained=sub.explain is not None)


def submit_deferred(svc: Services, sub: Submission) -> Deferred:
    """The deferred road: queue a waiting job before it has a row, and wait for it.

    The stored road takes the job when a row is cached (it answers from the outputs the
    Peek carries) or Redis fails (it accepts the job all the same; the sweeper queues it).
    """
    name, version, rows = sub.name, sub.version, sub.rows
    job_id = str(uuid.uuid4())
    created_at = utcnow()
    item = encode_item(
        job_id,
        rows,
        len(rows),
        created_at.isoformat(),
        request_id=sub.request_id,
        deferred=True,
        owner=sub.owner,
    )
    try:
        queue = RowQueue(svc.redis, name, version)
        admission = queue.admit(item, sub.keys, svc.settings.max_queued_jobs, sub.rate)
    except RedisError as exc:
        # As _peek does when Redis fails: compute every row, queue depth unknown.
        log.warning("could not queue job rows for %s v%s, storing the job first: %s", name, version, exc)
        return Deferred(peek=Peek([None] * len(rows), 0))
    if admission.outcome == "cached":
        return Deferred(peek=Peek(_decoded(admission.outputs), admission.depth))
    if admission.outcome == "overloaded":
        raise _overloaded(name, version, admission.depth)
    if admission.wake:
        wake_worker(svc, name, version)
    logs.bind(job_id=job_id, model=name, version=version)
    CACHE_MISSES.labels(name).inc(len(rows))
    finished = wait_for(svc, job_id, sub.wait)
    if finished is not None:
        return Deferred(view=finished)
    # Not finished in time: store the job before the client hears of it (the 202).
    uncached = [None] * len(rows)
    record = _record(uuid.UUID(job_id), name, version, rows, uncached, created_at=created_at, owner=sub.owner)
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stored = _insert_if_absent(conn, [record])
    # Not stored here means the worker stored it meanwhile, finished: answer with that.
    return Deferred(view=job_view(record) if stored else read(svc, uuid.UUID(job_id), None))


def _peek(svc: Services, sub: Submission) -> Peek:
    """Cached outputs of the rows and the queue's depth, in one round trip with the
    request's rate-limit count (raises RateLimited when a limit is spent).

    With no cache keys (the cache is off) nothing is looked up. An explained request's
    depth is that of the version's explained rows' queue.
    """
    n_rows = len(sub.rows)
    try:
        queue = RowQueue(svc.redis, sub.name, sub.version, sub.explain is not None)
        admission = queue.admit(None, sub.keys, rate=sub.rate)
    except RedisError as exc:
        # Redis is the fast path only: compute every row, and queue depth is unknown.
        log.warning("cache unavailable, computing every row: %s", exc)
        return Peek([None] * n_rows, 0)
    return Peek(_decoded(admission.outputs) if sub.keys else [None] * n_rows, admission.depth)


def _record(
    job_id: uuid.UUID,
    name: str,
    version: int,
    rows: list[list[float]],
    cached: list[Any],
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    created_at: datetime,
    owner: int | None,
    explain: str | None = None,
) -> dict[str, Any]:
    """A new job's row: finished already when every row's output was cached, else queued.

    ``explain`` is kept so that a job the sweeper queues again is explained all the same.
    """
    all_cached = all(c is not None for c in cached)
    return {
        "id": job_id,
        "model_name": name,
        "model_version": version,
        "status": JobStatus.SUCCEEDED if all_cached else JobStatus.QUEUED,
        "n_rows": len(rows),
        "inputs": rows,
        "outputs": cached if all_cached else None,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "cached_rows": sum(c is not None for c in cached),
        "owner_key_id": owner,
        "explain": explain,
        "created_at": created_at,
        "completed_at": created_at if all_cached else None,
    }


def _insert_if_absent(conn: Connection, records: list[dict[str, Any]]) -> int:
    """Insert job rows whose id is not stored yet; returns how many were inserted."""
    return conn.execute(
        dialect_insert(conn)(Job).on_conflict_do_nothing(index_elements=[Job.id]), records
    ).rowcount


def _overloaded(name: str, version: int, queued_jobs: int) -> Overloaded:
    # Backpressure: refuse before storing anything, so the client can retry elsewhere or later.
    return Overloaded(
        f"model {name!r} v{version} has {queued_jobs} jobs waiting; retry shortly",
        retry_after=2,
        model=name,
        version=version,
        queued_jobs=queued_jobs,
    )


def _shadow(
    svc: Services,
    name: str,
    shadow: traffic.Route,
    served_version: int,
    view: dict[str, Any],
    rows: list[Any],
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
    item = encode_item(view["id"], rows, len(rows), view["created_at"], shadow=True)
    enqueue(svc, name, target.version, item)


def _decoded(outputs: list[bytes | None]) -> list[Any]:
    """Cached outputs as the cache holds them (encoded, None where missing), decoded."""
    return [orjson.loads(v) if v is not None else None for v in outputs]


def _publish_result(svc: Services, view: dict[str, Any], owner: int | None) -> None:
    try:
        svc.redis.set(
            result_key(view["id"]),
            encode_view(owner, orjson.dumps(view)),
            ex=svc.settings.result_ttl_seconds,
        )
    except RedisError:
        pass


def _request_hash(
    name: str, version: int | None, alias: str | None, routing_key: str | None, inputs: list[Any]
) -> str:
    body = {"model": name, "version": version, "alias": alias, "routing_key": routing_key, "inputs": inputs}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _owned_key(key: str, owner: int | None) -> str:
    """The Idempotency-Key as stored: each API key has its own (the column has room for the prefix)."""
    return key if owner is None else f"{owner}:{key}"


def _find_by_key(svc: Services, key: str) -> dict[str, Any] | None:
    with svc.engine.connect() as conn:
        row = conn.execute(select(Job.__table__).where(Job.idempotency_key == key)).mappings().first()
    return dict(row) if row is not None else None


def _replay(existing: dict[str, Any], request_hash: str | None, key: str) -> dict[str, Any]:
    if existing["request_hash"] != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body",
            idempotency_key=key,
            job_id=str(existing["id"]),
        )
    return job_view(existing)


def _check_explained_rows(n_rows: int, limit: int) -> None:
    if n_rows > limit:
        raise PayloadTooLarge(
            f"{n_rows} rows sent with explain; at most {limit} per request that asks for explanations"
            " (EXPLAIN_MAX_ROWS)",
            rows=n_rows,
            limit=limit,
        )
