"""A finished batch handed on: outputs into the cache, views to pollers, numbers to Prometheus."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app import throughput
from app.metrics import BATCH_ROWS, INFERENCE, JOB_DURATION, JOBS, QUEUE_WAIT
from app.predictions import cache as output_cache
from app.predictions.items import encode_view
from app.predictions.view import FINISHED, job_view
from app.services import Services
from workers.batch_work import BatchWork


def observe(work: BatchWork, results: list[dict[str, Any]], completed_at: datetime) -> None:
    """Record the batch in Prometheus: its size and model time, each job's status, wait and total time."""
    name = work.name
    BATCH_ROWS.labels(name).observe(len(work.rows))
    INFERENCE.labels(name, work.backend).observe(work.inference_seconds)
    for status in FINISHED:
        count = sum(result["status"] == status for result in results)
        if count:
            JOBS.labels(name, str(work.version), status).inc(count)
    started = work.started_at.timestamp()
    for item in work.items:
        QUEUE_WAIT.labels(name).observe(max(0.0, started - item.enqueued_at))
        created = datetime.fromisoformat(item.created_at)
        JOB_DURATION.labels(name).observe(max(0.0, (completed_at - created).total_seconds()))


def publish(svc: Services, work: BatchWork, results: list[dict[str, Any]], completed_at: Any) -> None:
    """Cache row outputs, hand finished jobs to pollers, wake long-polls and count the jobs in
    the minute's throughput (app/throughput.py), in one round trip.

    An item whose outcome is an error caches nothing; its job's view carries the error.
    """
    settings = svc.settings
    name, version, items, keys, outcomes = work.name, work.version, work.items, work.keys, work.outcomes
    cache: dict[str, bytes] = {}
    if keys:
        offset = 0
        for item, outputs in zip(items, outcomes, strict=True):
            n_keys = output_cache.n_keys(len(item.rows))  # each of its item's kind
            if not isinstance(outputs, Exception):
                cache.update(output_cache.entries(keys[offset : offset + n_keys], outputs))
            offset += n_keys
    views = {
        item.job_id: encode_view(
            item.owner,
            job_view(
                {
                    "id": result["id"],
                    "status": result["status"],
                    "model_name": name,
                    "model_version": version,
                    "outputs": result["outputs"],
                    "error": result["error"],
                    "priority": item.priority,
                    "deadline": item.deadline,
                    "created_at": item.created_at,
                    "completed_at": completed_at,
                    "callback_url": item.callback_url,
                }
            ),
        )
        for item, result in zip(items, results, strict=True)
        if item.job_id not in work.not_written
    }
    failed = sum(result["status"] == "failed" for result in results)
    counts = throughput.increments(name, len(results) - failed, failed)
    output_cache.publish(svc, cache, views, settings.cache_ttl_seconds, settings.result_ttl_seconds, counts)
