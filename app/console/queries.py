"""The SQL and Redis reads behind the console's pages, each bounded and on an index (migration 0017).

Every function takes the services and the viewer (None: auth off or an admin sees all; a
predict key sees only what it submitted, as in the API: app/access/auth.py's ``may_read``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import Float, Text, and_, case, cast, func, select
from sqlalchemy.sql import Select

from app.access.auth import Principal
from app.api.health import connection_checks
from app.batch_jobs import jobs as batch_jobs
from app.batch_jobs.storage import FINISHED as BATCH_FINISHED
from app.db import BulkChunk, BulkJob, Feedback, Job, ModelVersion, utcnow
from app.db.ids import by_id
from app.errors import StoreUnavailable
from app.predictions.queue import queue_key
from app.predictions.view import JobStatus
from app.registry import held, pools
from app.services import Services

RECENT = 20
BATCH_JOBS_SHOWN = 50


def _owned(query: Select[Any], column: Any, viewer: Principal | None) -> Select[Any]:
    if viewer is None or viewer.allows("admin"):
        return query
    return query.where(column == viewer.key_id)


def health(svc: Services) -> dict[str, str]:
    """Database, Redis and the artifact store, each "ok" or what went wrong (as /readyz checks)."""
    checks = connection_checks(svc)
    store = svc.registry.artifacts.store  # a directory or an S3 bucket (app/storage/)
    state = store.check()
    checks["artifact store"] = "ok" if state == "ok" else f"{state}: {store.root}"
    return checks


def worker_pools(svc: Services) -> dict[str, int]:
    """Each worker pool (POOLS, and any a model is in) and how many worker processes serve it now,
    as /readyz counts them (their claims in Redis)."""
    names = sorted(set(pools.known(svc.settings.pools)) | pools.pools_in_use(svc.engine))
    return held.pool_workers(svc.redis, names)


def queues(svc: Services, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model version with anything waiting: rows queued in Redis and the oldest queued job's age."""
    versions = [(m["name"], v["version"]) for m in models for v in m["versions"]]
    with svc.redis.pipeline(transaction=False) as pipe:
        for name, version in versions:
            pipe.llen(queue_key(name, version))
            pipe.llen(queue_key(name, version, explained=True))
        lengths = pipe.execute()
    with svc.engine.connect() as conn:
        oldest = {
            (name, version): created
            for name, version, created in conn.execute(
                select(Job.model_name, Job.model_version, func.min(Job.created_at))
                .where(Job.status == JobStatus.QUEUED)
                .group_by(Job.model_name, Job.model_version)
            )
        }
    now = utcnow()
    out = []
    for i, (name, version) in enumerate(versions):
        depth = lengths[2 * i] + lengths[2 * i + 1]
        created = oldest.get((name, version))
        if depth or created:
            age = _age(created, now)
            out.append({"model": name, "version": version, "depth": depth, "oldest_seconds": age})
    return out


def running_batch_jobs(svc: Services, viewer: Principal | None) -> list[dict[str, Any]]:
    query = select(BulkJob.__table__).where(BulkJob.status.in_(("queued", "running")))
    query = _owned(query, BulkJob.owner_key_id, viewer)
    return _with_progress(svc, query.order_by(BulkJob.created_at.desc()))


def batch_jobs_page(svc: Services, viewer: Principal | None) -> list[dict[str, Any]]:
    """The newest batch jobs, each with its progress (one GROUP BY over their chunks)."""
    query = _owned(select(BulkJob.__table__), BulkJob.owner_key_id, viewer)
    return _with_progress(svc, query.order_by(BulkJob.created_at.desc()))


def _with_progress(svc: Services, query: Select[Any]) -> list[dict[str, Any]]:
    with svc.engine.connect() as conn:
        rows = conn.execute(query.limit(BATCH_JOBS_SHOWN)).all()
        ids = [row.id for row in rows]
        counts: dict[Any, dict[str, int]] = defaultdict(dict)
        totals: dict[Any, dict[str, int]] = defaultdict(dict)
        if ids:
            for job_id, status, n, total in conn.execute(
                select(BulkChunk.job_id, BulkChunk.status, func.count(), func.sum(BulkChunk.rows))
                .where(BulkChunk.job_id.in_(ids))
                .group_by(BulkChunk.job_id, BulkChunk.status)
            ):
                counts[job_id][status] = n
                totals[job_id][status] = int(total)
    return [batch_jobs.view(row, counts[row.id], totals[row.id], []) for row in rows]


def batch_finished(view: dict[str, Any]) -> bool:
    return view["status"] in BATCH_FINISHED


def quality_by_model(
    svc: Services, models: list[dict[str, Any]], name: str | None = None
) -> dict[str, dict[int, dict[str, Any]]]:
    """Live quality per model (or only ``name``) and version from feedback, summed in SQL: accuracy
    for classifiers; MAE and the mean squared error for regressors (labels and predictions are
    stored as JSON; equal labels have equal JSON text)."""
    task = {m["name"]: _task(m) for m in models if name is None or m["name"] == name}
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    label, predicted = cast(Feedback.label, Text), cast(Feedback.prediction, Text)
    error = func.abs(cast(label, Float) - cast(predicted, Float))
    groups = [
        ("accuracy", [n for n, t in task.items() if t == "classification"],
         func.avg(case((label == predicted, 1.0), else_=0.0)), func.avg(0.0)),
        ("mae", [n for n, t in task.items() if t != "classification"],
         func.avg(error), func.avg(error * error)),
    ]  # fmt: skip
    with svc.engine.connect() as conn:
        for metric, names, value, square in groups:
            if not names:
                continue
            for model, version, n, mean, squared in conn.execute(
                select(Feedback.model_name, Feedback.model_version, func.count(), value, square)
                .where(Feedback.model_name.in_(names))
                .group_by(Feedback.model_name, Feedback.model_version)
            ):
                out[model][version] = {"version": version, "n": n, "metric": metric, "value": float(mean),
                                       "square": float(squared)}  # fmt: skip
    return out


def quality_over_time(svc: Services, model: dict[str, Any]) -> dict[int, list[tuple[str, float, int]]]:
    """Per version: (day, accuracy or MAE, labeled rows) for each day with feedback."""
    label, predicted = cast(Feedback.label, Text), cast(Feedback.prediction, Text)
    if _task(model) == "classification":
        value = func.avg(case((label == predicted, 1.0), else_=0.0))
    else:
        value = func.avg(func.abs(cast(label, Float) - cast(predicted, Float)))
    day = func.date(Feedback.created_at)
    out: dict[int, list[tuple[str, float, int]]] = defaultdict(list)
    with svc.engine.connect() as conn:
        for version, when, metric, n in conn.execute(
            select(Feedback.model_version, day, value, func.count())
            .where(Feedback.model_name == model["name"])
            .group_by(Feedback.model_version, day)
            .order_by(Feedback.model_version, day)
        ):
            out[version].append((str(when), float(metric), n))
    return out


def artifact_sizes(svc: Services, name: str) -> dict[int, int | None]:
    """Bytes of each version's artifact file (None when it is missing from the store)."""
    from app.db import Model

    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(ModelVersion.version, ModelVersion.artifact_path)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(Model.name == name)
        ).all()
    sizes: dict[int, int | None] = {}
    store = svc.registry.artifacts.store
    for version, path in rows:
        try:
            sizes[version] = store.size(path)
        except StoreUnavailable:
            sizes[version] = None
    return sizes


def failed_jobs(svc: Services, model: str, viewer: Principal | None) -> list[Any]:
    """A model's newest failed jobs with their error (ix_jobs_failed_by_model)."""
    query = select(Job.id, Job.model_version, Job.error, Job.completed_at, Job.n_rows).where(
        and_(Job.status == JobStatus.FAILED, Job.model_name == model)
    )
    query = _owned(query, Job.owner_key_id, viewer).order_by(Job.completed_at.desc()).limit(RECENT)
    with svc.engine.connect() as conn:
        return list(conn.execute(query))


def own_recent_jobs(svc: Services, viewer: Principal) -> list[Any]:
    """A predict key's newest jobs (ix_jobs_owner_created)."""
    query = (
        select(Job.id, Job.model_name, Job.model_version, Job.status, Job.n_rows, Job.created_at)
        .where(Job.owner_key_id == viewer.key_id)
        .order_by(Job.created_at.desc())
        .limit(RECENT)
    )
    with svc.engine.connect() as conn:
        return list(conn.execute(query))


def job(svc: Services, job_id: uuid.UUID) -> Any:
    """A job's whole row (inputs and outputs), or None."""
    with svc.engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(by_id(Job, job_id))).mappings().first()


def _task(model: dict[str, Any]) -> str:
    versions = model["versions"]
    return str(versions[-1]["signature"].get("task", "")) if versions else ""


def _age(created: Any, now: Any) -> float | None:
    if created is None:
        return None
    if created.tzinfo is None:  # SQLite returns naive UTC datetimes
        created = created.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - created).total_seconds())
