"""Prometheus metrics: what the API and the workers count, summed across each server's processes.

Counters and histograms are recorded where things happen (API requests, submits, batches)
and summed across processes by the client library's multiprocess mode (app/multiproc.py).
State that lives elsewhere (queue depth, the oldest queued job, drift) is read at scrape
time by the API (app/api/live_metrics.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.core import Metric

log = logging.getLogger(__name__)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "predq_http_requests_total",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "predq_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["route", "method"],
    buckets=_SECONDS,
)
JOBS = Counter(
    "predq_jobs_total", "Jobs finished, by model, version and final status.", ["model", "version", "status"]
)
CACHE_HITS = Counter("predq_cache_hits_total", "Rows answered from the output cache at submit.", ["model"])
CACHE_MISSES = Counter("predq_cache_misses_total", "Rows that had to go to a worker.", ["model"])
CACHE_WRITE_ERRORS = Counter(
    "predq_cache_write_errors_total",
    "Cached outputs and result views not written: their Redis refused them (out of memory) or failed.",
)
PUT_BACK_REFUSED = Counter(
    "predq_put_back_refused_total",
    "Items a worker's blocking wait took that Redis refused to take back (out of memory, or gone): "
    "that worker ran each at once, in a batch of its own.",
)
BATCH_ROWS = Histogram(
    "predq_batch_size_rows",
    "Rows fed to one model call.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
INFERENCE = Histogram(
    "predq_inference_duration_seconds",
    "Time of one model call, by the backend that answered it (sklearn, or onnxruntime: compiled).",
    ["model", "backend"],
    buckets=_SECONDS,
)
QUEUE_WAIT = Histogram(
    "predq_queue_wait_seconds",
    "From a job's rows entering the queue to its batch starting.",
    ["model"],
    buckets=_SECONDS,
)
JOB_DURATION = Histogram(
    "predq_job_duration_seconds",
    "End to end: from the job being stored to its result being written.",
    ["model"],
    buckets=_SECONDS,
)
BULK_ROWS = Counter("predq_bulk_rows_scored_total", "Rows scored by batch-job chunks.", ["model"])
BULK_CHUNKS = Counter(
    "predq_bulk_chunks_total", "Batch-job chunks finished, by model and status.", ["model", "status"]
)
TRAINING_RUNS = Counter(
    "predq_training_runs_total", "Retraining runs, by model and outcome.", ["model", "outcome"]
)
MODEL_CACHE_BYTES = Gauge(
    "predq_model_cache_bytes",
    "Bytes held by the per-process version caches (models, explainers, importances), live processes summed.",
    ["cache"],
    multiprocess_mode="livesum",
)
MODEL_LOADS = Counter(
    "predq_model_loads_total",
    "Versions loaded (or explainers, importances built), by cache and model.",
    ["cache", "model"],
)
MODEL_EVICTIONS = Counter(
    "predq_model_evictions_total",
    "Entries dropped to stay within MODEL_CACHE_BYTES / MODEL_CACHE_MAX, by cache, model and reason"
    " (out_of_service, lru, over_budget: bigger than the whole budget, used once).",
    ["cache", "model", "reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "predq_webhook_attempts_total",
    "Webhook delivery attempts, by event and outcome: delivered, retried (due later), failed (given up).",
    ["event", "outcome"],
)
PARTITIONS_DROPPED = Counter(
    "predq_partitions_dropped_total",
    "Day partitions dropped by the sweeper once past retention (PostgreSQL), by table.",
    ["table"],
)
PARTITION_STRAGGLERS = Counter(
    "predq_partition_stragglers_moved_total",
    "Jobs moved to the default partition from a day being dropped (unfinished, or within retention).",
    ["table"],
)
PARTITIONS_NOT_MADE = Counter(
    "predq_partitions_not_made_total",
    "Day partitions the sweeper failed to make ahead (lock not granted, a row of that day in the default).",
    ["table"],
)
PARTITION_DROP_WAITS = Counter(
    "predq_partition_drop_waits_total",
    "Day partitions past retention left for the next sweep (lock not granted in time, or older keys left).",
    ["table"],
)


class _ThisProcess:
    """The default registry's metrics, when there is no multiprocess directory (tests, the CLI)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def process_registry() -> CollectorRegistry:
    """Every process's counters and histograms: summed from the multiprocess directory if there is one."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    else:
        registry.register(_ThisProcess())
    return registry
