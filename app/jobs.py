"""Submitting prediction jobs and reading them back: the API's side of the work.

A submit validates the rows, answers cached rows from Redis, refuses work when the model's
queue is too deep (backpressure), commits the job row to the database (the source of
truth: a 202 means it is stored), then pushes the remaining rows onto the model version's
Redis list and wakes a worker only if none is taking batches from that list.

A submit that waits (``?wait=S``) for rows none of which is cached takes a shorter road:
one Redis call pushes its rows, and the worker inserts the job row, outputs and all, in
one statement for its whole batch. Before the client hears of the job either the worker
has stored it (the answer is the finished job) or, when S passes first, this module
stores it as queued (the answer is the 202). So every job a client is told of is in the
database, and the common case costs no database round trip in the API and one write
per job instead of an insert and an update.

A job belongs to the API key that submitted it: only that key or an admin key reads it
(others get the 404 an unknown id gets, so ids do not leak), and its Idempotency-Key is
that key's alone. With auth off jobs have no owner and every caller reads every job.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from app import bulkfiles, logs, traffic
from app.celery_app import batch_task
from app.db import Job, ShadowOutput, dialect_insert, utcnow
from app.errors import (
    ExplanationUnsupported,
    IdempotencyConflict,
    JobNotFound,
    Overloaded,
    PayloadTooLarge,
    PredqError,
)
from app.job_view import FINISHED, JobStatus, job_view
from app.metrics import CACHE_HITS, CACHE_MISSES, JOBS
from app.rqueue import RowQueue, cache_keys, decode_view, done_key, encode_item, encode_view, result_key
from app.services import Services
from app.signature import largest_value, rows_to_matrix

if TYPE_CHECKING:
    import pyarrow as pa

    from app.auth import Principal
    from app.ratelimit import RateCharge

log = logging.getLogger(__name__)

# Built once: constructing the statement per request shows up in profiles.
_INSERT_JOB = insert(Job)


class Peek(NamedTuple):
    """What Redis holds for a submit's rows: their cached outputs (None where missing) and
    how many jobs wait on the model version's queue."""

    cached: list[Any]
    queued_jobs: int


def submit(
    svc: Services,
    name: str,
    inputs: list[Any] | pa.Table,
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
    """Store a job for ``inputs`` and queue it; returns the job's public view.

    ``inputs`` are JSON rows, or an Arrow table whose columns are the model's features.
    Without ``version`` or ``alias`` the model's traffic policy picks the version (sticky
    by ``routing_key``). ``request_id`` travels with the queued rows, so the worker's log
    line names it too. With ``wait`` > 0 the view is the finished job's when it finishes
    within ``wait`` seconds. ``rate`` is the request's rate-limit count, sent in the same
    Redis call as the cache lookup (raises RateLimited when a limit is spent). ``owner``
    is the submitting API key's id (None with auth off); ``idempotency_key`` is its own.
    With ``explain`` ("predicted", or "all" for every class too) each output carries its
    row's explanation, computed by the worker or cached under keys of their own.
    """
    policy = None
    target_version, target_alias = version, alias
    if version is None and alias is None:
        policy = svc.registry.policy(name)
        route = traffic.choose(policy, name, routing_key)
        target_version, target_alias = route.version, route.alias
    served = svc.registry.resolve(name, version=target_version, alias=target_alias)
    if explain and not served.signature.get("explainer"):
        raise ExplanationUnsupported(
            f"{served.signature.get('estimator', 'this model')} ({name} v{served.version}) has no fast"
            " explainer;"
            " explanations are computed for tree ensembles, gradient boosting, linear models and pipelines"
            " ending in one (a version registered before explanations existed: register it again)",
            estimator=served.signature.get("estimator"),
        )
    if explain:
        n_rows = len(inputs) if isinstance(inputs, list) else inputs.num_rows
        _check_explained_rows(n_rows, svc.settings.explain_max_rows)
    if isinstance(inputs, list):
        matrix = rows_to_matrix(
            inputs,
            served.signature["n_features"],
            served.feature_index,
            svc.settings.max_rows_per_request,
            largest_value(served.signature),
        )
    else:  # an Arrow table: its columns are the features
        matrix = bulkfiles.table_matrix(inputs, served.signature, svc.settings.max_rows_per_request)
    rows = matrix.tolist()
    if not isinstance(inputs, list):
        inputs = rows  # what an Idempotency-Key's hash reads
    # Only an Idempotency-Key needs the body's hash; skip the extra serialization otherwise.
    # It hashes what the client sent, not the route drawn for it: a replay may draw another.
    request_hash = (
        _request_hash(name, version, alias, routing_key, inputs) if idempotency_key is not None else None
    )
    stored_key = _owned_key(idempotency_key, owner) if idempotency_key is not None else None
    if stored_key is not None:
        existing = _find_by_key(svc, stored_key)
        if existing is not None:
            return _replay(existing, request_hash, idempotency_key)

    # With the cache off there is nothing to look up, so no row is hashed.
    keys = cache_keys(name, served.version, matrix, explain) if svc.settings.cache_ttl_seconds > 0 else []
    if wait > 0 and stored_key is None and not explain and (policy is None or policy.shadow is None):
        # Neither an Idempotency-Key (its row is what finds a replay), a shadow (its outputs
        # refer to the job's row) nor explanations (rare: kept off this road) can wait for
        # the worker to store the job.
        deferred = _submit_deferred(svc, name, served.version, rows, keys, request_id, wait, rate, owner)
        if not isinstance(deferred, Peek):
            return deferred
        peek = deferred
    else:
        peek = _peek(svc, name, served.version, keys, len(rows), rate, explained=explain is not None)
    cached, queued_jobs = peek
    all_cached = all(c is not None for c in cached)
    if not all_cached and queued_jobs >= svc.settings.max_queued_jobs:
        raise _overloaded(name, served.version, queued_jobs)
    record = _record(
        uuid.uuid4(),
        name,
        served.version,
        rows,
        cached,
        idempotency_key=stored_key,
        request_hash=request_hash,
        created_at=utcnow(),
        owner=owner,
        explain=explain,
    )
    # A database that cannot be reached raises here, before anything is queued; the
    # error handler in app/errors.py answers 503 for it.
    try:
        # One statement, autocommitted: one round trip instead of BEGIN/INSERT/COMMIT.
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(_INSERT_JOB, record)
    except IntegrityError:
        # Another request with the same Idempotency-Key won the race.
        existing = _find_by_key(svc, stored_key) if stored_key else None
        if existing is None or request_hash is None:
            raise
        return _replay(existing, request_hash, idempotency_key or "")

    view = job_view(record)
    logs.bind(job_id=view["id"], model=name, version=served.version)
    if policy is not None and policy.shadow is not None:
        _shadow(svc, name, policy.shadow, served.version, view, rows)
    hits = record["cached_rows"]
    CACHE_HITS.labels(name).inc(hits)
    CACHE_MISSES.labels(name).inc(len(rows) - hits)
    if all_cached:
        JOBS.labels(name, str(served.version), JobStatus.SUCCEEDED).inc()
        _publish_result(svc, view, owner)
        return view
    _queue_rows(svc, name, served.version, view, rows, cached, request_id, owner, explain)
    if wait > 0:
        # Just stored, so nothing to read first: wait for the worker's hand-off.
        view = wait_for(svc, view["id"], wait) or view
    return view


def _check_explained_rows(n_rows: int, limit: int) -> None:
    if n_rows > limit:
        raise PayloadTooLarge(
            f"{n_rows} rows sent with explain; at most {limit} per request that asks for explanations"
            " (EXPLAIN_MAX_ROWS)",
            rows=n_rows,
            limit=limit,
        )


def _queue_rows(
    svc: Services,
    name: str,
    version: int,
    view: dict[str, Any],
    rows: list[list[float]],
    cached: list[Any],
    request_id: str | None,
    owner: int | None,
    explain: str | None = None,
) -> None:
    """Push a stored job's uncached rows (with its cached outputs beside them) for a worker."""
    job_id = view["id"]
    pending = [i for i, c in enumerate(cached) if c is None]
    if len(pending) == len(rows):
        item = encode_item(
            job_id, rows, len(rows), view["created_at"], request_id=request_id, owner=owner, explain=explain
        )
    else:
        item = encode_item(
            job_id,
            [rows[i] for i in pending],
            len(rows),
            view["created_at"],
            slots=pending,
            pre={str(i): c for i, c in enumerate(cached) if c is not None},
            request_id=request_id,
            owner=owner,
            explain=explain,
        )
    enqueue(svc, name, version, item, explained=explain is not None)


def _submit_deferred(
    svc: Services,
    name: str,
    version: int,
    rows: list[list[float]],
    keys: list[str],
    request_id: str | None,
    wait: float,
    rate: RateCharge | None,
    owner: int | None,
) -> dict[str, Any] | Peek:
    """Queue a waiting job before it has a row and wait: the job's view, or a Peek for the stored road.

    The stored road takes the job when a row is cached (it answers from the outputs the
    Peek carries) or Redis fails (it accepts the job all the same; the sweeper queues it).
    """
    job_id = str(uuid.uuid4())
    created_at = utcnow()
    item = encode_item(
        job_id, rows, len(rows), created_at.isoformat(), request_id=request_id, deferred=True, owner=owner
    )
    try:
        admission = RowQueue(svc.redis, name, version).admit(item, keys, svc.settings.max_queued_jobs, rate)
    except RedisError as exc:
        # As _peek does when Redis fails: compute every row, queue depth unknown.
        log.warning("could not queue job rows for %s v%s, storing the job first: %s", name, version, exc)
        return Peek([None] * len(rows), 0)
    if admission.outcome == "cached":
        return Peek(_decoded(admission.outputs), admission.depth)
    if admission.outcome == "overloaded":
        raise _overloaded(name, version, admission.depth)
    if admission.wake:
        _wake_worker(svc, name, version)
    logs.bind(job_id=job_id, model=name, version=version)
    CACHE_MISSES.labels(name).inc(len(rows))
    finished = wait_for(svc, job_id, wait)
    if finished is not None:
        return finished
    # Not finished in time: store the job before the client hears of it (the 202).
    uncached = [None] * len(rows)
    record = _record(uuid.UUID(job_id), name, version, rows, uncached, created_at=created_at, owner=owner)
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stored = _insert_if_absent(conn, [record])
    # Not stored here means the worker stored it meanwhile, finished: answer with that.
    return job_view(record) if stored else _read(svc, uuid.UUID(job_id), None)


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


def enqueue(svc: Services, name: str, version: int, item: bytes, *, explained: bool = False) -> None:
    """Push rows and wake a worker when none holds the queue (no Celery message per request).

    ``explained``: the item asks for explanations, and goes to the version's explained rows.
    """
    try:
        woke = RowQueue(svc.redis, name, version, explained).push(item)
    except RedisError as exc:
        # The job is committed; the sweeper re-queues it from the database.
        log.warning("could not queue job rows for %s v%s: %s", name, version, exc)
        return
    if woke:
        _wake_worker(svc, name, version, explained=explained)


def _wake_worker(svc: Services, name: str, version: int, *, explained: bool = False) -> None:
    try:
        svc.celery.send_task(batch_task(explained), args=[name, version])
    except BrokerError as exc:
        # The rows are queued; the sweeper wakes a worker for every non-empty queue.
        log.warning("could not wake a worker for %s v%s: %s", name, version, exc)


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


def get(svc: Services, job_id: str, wait: float = 0.0, reader: Principal | None = None) -> dict[str, Any]:
    """A job's public view; with ``wait`` > 0, hold until it finishes or ``wait`` passes.

    ``reader`` is the calling API key (None with auth off): a job it may not read is not found.
    """
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id) from None
    logs.bind(job_id=str(parsed))
    view = _read(svc, parsed, reader)
    if wait > 0 and view["status"] not in FINISHED:
        view = wait_for(svc, view["id"], wait) or _read(svc, parsed, reader)
    return view


def may_read(reader: Principal | None, owner: int | None) -> bool:
    """Whether ``reader`` may see a job ``owner`` submitted: with auth off (no reader) and
    for admin keys every job, for other keys only their own."""
    return reader is None or reader.key_id == owner or reader.allows("admin")


def wait_for(svc: Services, job_id: str, seconds: float) -> dict[str, Any] | None:
    """The finished job's view once a worker hands it over, or None after ``seconds``.

    The worker pushes the view onto a short-lived list; BLMOVE from that list to itself
    returns it and leaves it there, so every client waiting on the job gets it.
    """
    key = done_key(job_id)
    try:
        raw = svc.redis_wait.blmove(key, key, seconds, "LEFT", "RIGHT")
    except RedisError as exc:
        log.warning("long-poll for %s fell back to one read: %s", job_id, exc)
        return None
    return decode_view(raw)[1] if raw is not None else None


def _read(svc: Services, job_id: uuid.UUID, reader: Principal | None) -> dict[str, Any]:
    """The job's view from Redis, else the database; JobNotFound when ``reader`` may not read it."""
    found: tuple[int | None, dict[str, Any]] | None = None
    try:
        raw = svc.redis.get(result_key(str(job_id)))
        if raw is not None:
            found = decode_view(raw)
    except RedisError:
        pass
    if found is None:
        with svc.engine.connect() as conn:
            row = conn.execute(select(Job.__table__).where(Job.id == job_id)).mappings().first()
        if row is not None:
            found = row["owner_key_id"], job_view(row)
    if found is None or not may_read(reader, found[0]):
        # The same answer for another key's job as for no job: ids do not leak.
        raise JobNotFound(f"no job with id {str(job_id)!r}", id=str(job_id))
    return found[1]


def _peek(
    svc: Services,
    name: str,
    version: int,
    keys: list[str],
    n_rows: int,
    rate: RateCharge | None,
    *,
    explained: bool = False,
) -> Peek:
    """Cached outputs of the ``n_rows`` rows and the queue's depth, in one round trip with the
    request's rate-limit count (raises RateLimited when a limit is spent).

    ``keys`` are the rows' cache keys; none (the cache is off) means nothing is looked up.
    ``explained``: the depth is that of the version's explained rows' queue.
    """
    try:
        admission = RowQueue(svc.redis, name, version, explained).admit(None, keys, rate=rate)
    except RedisError as exc:
        # Redis is the fast path only: compute every row, and queue depth is unknown.
        log.warning("cache unavailable, computing every row: %s", exc)
        return Peek([None] * n_rows, 0)
    return Peek(_decoded(admission.outputs) if keys else [None] * n_rows, admission.depth)


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


def shadow_comparisons(svc: Services, name: str, limit: int = 50) -> dict[str, Any]:
    """The newest shadow outputs of a model beside what served the same jobs, and how often they agree."""
    svc.registry.require(name)
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(ShadowOutput.job_id, ShadowOutput.model_version, ShadowOutput.outputs,
                   Job.model_version.label("served_version"), Job.outputs.label("served_outputs"))
            .join(Job, Job.id == ShadowOutput.job_id)
            .where(ShadowOutput.model_name == name, Job.status == JobStatus.SUCCEEDED)
            .order_by(ShadowOutput.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
    pairs, agreeing, compared = [], 0, 0
    for row in rows:
        for served, shadow in zip(row.served_outputs, row.outputs, strict=True):
            compared += 1
            agreeing += served["prediction"] == shadow["prediction"]
        pairs.append(
            {
                "job_id": str(row.job_id),
                "served": {"version": row.served_version, "outputs": row.served_outputs},
                "shadow": {"version": row.model_version, "outputs": row.outputs},
            }
        )
    agreement = agreeing / compared if compared else None
    return {"model": name, "rows_compared": compared, "prediction_agreement": agreement, "jobs": pairs}
