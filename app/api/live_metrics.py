"""Gauges read when Prometheus scrapes the API: queue depth (Redis), the oldest queued job
and batch-job chunks waiting (the database, so they count what Redis lost too), each
model's newest drift report, and each Redis's memory against its budget. The counters and
histograms are app/metrics.py's."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from app.db import PRIORITIES, BulkChunk, BulkJob, DriftReport, Job, utcnow
from app.metrics import process_registry
from app.predictions.queue import queue_keys, queued_versions
from app.predictions.view import JobStatus
from app.redis_memory import redis_gauges
from app.registry import held, pools
from app.services import Services

log = logging.getLogger(__name__)


class LiveState:
    """Gauges read at scrape time: queue depth (Redis) and the oldest queued job (database)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "predq_queue_depth_jobs",
            "Jobs waiting on a model version's Redis queue.",
            labels=["model", "version"],
        )
        try:
            queues = queued_versions(self.svc.redis)
            with self.svc.redis.pipeline(transaction=False) as pipe:
                for name, version, explained in queues:
                    for key in queue_keys(name, version, explained):
                        pipe.llen(key)
                found = iter(pipe.execute())
                lengths = [sum(next(found) for _ in PRIORITIES) for _ in queues]
            # Plain and explained rows wait on a list per priority each; a version's depth is all.
            by_version: dict[tuple[str, int], int] = {}
            for (name, version, _), length in zip(queues, lengths, strict=True):
                by_version[name, version] = by_version.get((name, version), 0) + length
            for (name, version), length in by_version.items():
                depth.add_metric([name, str(version)], length)
        except Exception as exc:  # a scrape must still answer when Redis is down
            log.warning("queue depth unavailable: %s", exc)
        yield depth

        oldest = GaugeMetricFamily(
            "predq_oldest_queued_job_age_seconds",
            "Age of the oldest job still queued, per model version (from the database, so it "
            "counts jobs Redis lost too).",
            labels=["model", "version"],
        )
        by_priority = GaugeMetricFamily(
            "predq_oldest_queued_job_by_priority_age_seconds",
            "Age of the oldest job still queued, per model version and priority (the signal an"
            " autoscaler reads: high work waiting long means too few workers).",
            labels=["model", "version", "priority"],
        )
        try:
            with self.svc.engine.connect() as conn:
                rows = conn.execute(
                    select(Job.model_name, Job.model_version, Job.priority, func.min(Job.created_at))
                    .where(Job.status == JobStatus.QUEUED)
                    .group_by(Job.model_name, Job.model_version, Job.priority)
                ).all()
            now = utcnow()
            ages: dict[tuple[str, str], float] = {}
            for name, version, priority, created in rows:
                if created.tzinfo is None:  # SQLite returns naive UTC datetimes
                    created = created.replace(tzinfo=now.tzinfo)
                age = max(0.0, (now - created).total_seconds())
                by_priority.add_metric([name, str(version), priority], age)
                ages[name, str(version)] = max(age, ages.get((name, str(version)), 0.0))
            for labels, age in ages.items():
                oldest.add_metric(list(labels), age)
        except Exception as exc:
            log.warning("oldest queued job unavailable: %s", exc)
        yield oldest
        yield by_priority
        yield from self._bulk_depth()
        yield from self._pool_workers()
        yield from self._drift()
        yield from redis_gauges(self.svc)

    def _pool_workers(self) -> Iterator[Metric]:
        """Worker processes serving each pool, as they report it (app/registry/held.py); 0: that
        pool's models' jobs wait."""
        found = GaugeMetricFamily(
            "predq_pool_workers",
            "Worker processes serving each worker pool (0: its jobs wait).",
            labels=["pool"],
        )
        try:
            names = sorted(set(pools.known(self.svc.settings.pools)) | pools.pools_in_use(self.svc.engine))
            for name, count in held.pool_workers(self.svc.redis, names).items():
                found.add_metric([name], count)
        except Exception as exc:
            log.warning("pool workers unavailable: %s", exc)
        yield found

    def _bulk_depth(self) -> Iterator[Metric]:
        """Batch-job chunks waiting for a bulk worker, per model (from the database, like the
        oldest queued job: it counts chunks whose message Redis lost too)."""
        queued = GaugeMetricFamily(
            "predq_bulk_chunks_queued", "Batch-job chunks waiting for a bulk worker.", labels=["model"]
        )
        try:
            with self.svc.engine.connect() as conn:
                rows = conn.execute(
                    select(BulkJob.model_name, func.count())
                    .select_from(BulkChunk)
                    .join(BulkJob, BulkJob.id == BulkChunk.job_id)
                    .where(BulkChunk.status == "queued")
                    .group_by(BulkJob.model_name)
                ).all()
            for name, count in rows:
                queued.add_metric([name], count)
        except Exception as exc:
            log.warning("bulk queue depth unavailable: %s", exc)
        yield queued

    def _drift(self) -> Iterator[Metric]:
        """The newest drift report of each model (stored by the beat task; read here, so any API
        process exports it)."""
        detected = GaugeMetricFamily(
            "predq_drift_detected",
            "1 when the newest drift check found the window drifted.",
            labels=["model", "version"],
        )
        share = GaugeMetricFamily(
            "predq_drift_share",
            "Share of features that drifted in the newest check.",
            labels=["model", "version"],
        )
        psi = GaugeMetricFamily(
            "predq_drift_psi",
            "Population stability index per feature.",
            labels=["model", "version", "feature"],
        )
        pvalue = GaugeMetricFamily(
            "predq_drift_ks_pvalue",
            "Two-sample KS p-value per feature.",
            labels=["model", "version", "feature"],
        )
        try:
            newest = select(func.max(DriftReport.id)).group_by(DriftReport.model_name).scalar_subquery()
            with self.svc.engine.connect() as conn:
                table = DriftReport.__table__
                reports = conn.execute(select(table).where(table.c.id.in_(newest))).mappings().all()
        except Exception as exc:
            log.warning("drift reports unavailable: %s", exc)
            reports = []
        for report in reports:
            labels = [report["model_name"], str(report["model_version"])]
            detected.add_metric(labels, 1.0 if report["drifted"] else 0.0)
            if report["drifted_share"] is not None:
                share.add_metric(labels, report["drifted_share"])
            for feature in report["features"]:
                psi.add_metric([*labels, feature["feature"]], feature["psi"])
                pvalue.add_metric([*labels, feature["feature"]], feature["ks_pvalue"])
        yield from (detected, share, psi, pvalue)


def exposition(svc: Services) -> tuple[bytes, dict[str, str]]:
    """The /metrics body and headers: the API processes' metrics plus the live gauges."""
    registry = process_registry()
    registry.register(LiveState(svc))
    return generate_latest(registry), {"Content-Type": CONTENT_TYPE_LATEST}
