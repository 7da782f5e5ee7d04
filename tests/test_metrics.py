"""Prometheus metrics from the API (granian, 2 processes) and a worker (prefork, 2 processes).

Each test scrapes before and after some traffic and checks that counters and histograms
moved by exactly what the traffic should have caused.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from app.db import Batch, Job, utcnow
from app.predictions.items import encode_item
from app.predictions.queue import RowQueue
from tests.helpers import bearer, insert_queued_job, iris_rows, metric_samples, scrape_test_client

SUBMIT = "/v1/models/<string:name>/predictions"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition at ``url``."""
    return metric_samples(httpx.get(url, timeout=10).text)


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def batches(svc: Any) -> tuple[int, int]:
    with svc.engine.connect() as conn:
        n, rows = conn.execute(select(func.count(), func.coalesce(func.sum(Batch.n_rows), 0))).one()
    return n, rows


def test_api_and_worker_metrics_count_the_traffic(
    svc, registered, worker, worker_metrics_url, api_server, tokens
):
    api = httpx.Client(base_url=api_server, headers=bearer(tokens["predict"]), timeout=30)
    rows = iris_rows(12).tolist()  # fresh rows: the first 12 requests are cache misses
    api_before, worker_before = scrape(f"{api_server}/metrics"), scrape(worker_metrics_url)
    batches_before = batches(svc)

    for row in rows:  # one row each, waited for: 12 jobs through the worker
        assert api.post("/v1/models/iris/predictions?wait=20", json={"inputs": [row]}).status_code == 200
    again = api.post("/v1/models/iris/predictions", json={"inputs": rows[:5]})  # all cached
    bad = [api.post("/v1/models/iris/predictions", json={"inputs": [[1, 2]]}) for _ in range(3)]
    anonymous = [
        httpx.post(f"{api_server}/v1/models/iris/predictions", json={"inputs": rows[:1]}) for _ in range(2)
    ]

    api_after, worker_after = scrape(f"{api_server}/metrics"), scrape(worker_metrics_url)
    n_batches, n_rows = (a - b for a, b in zip(batches(svc), batches_before, strict=True))
    assert again.status_code == 200 and {r.status_code for r in bad} == {422}
    assert {r.status_code for r in anonymous} == {401}

    # API: requests by route and status, their latency, the cache.
    requests = "predq_http_requests_total"
    assert delta(api_before, api_after, requests, route=SUBMIT, method="POST", status="200") == 13
    assert delta(api_before, api_after, requests, route=SUBMIT, method="POST", status="422") == 3
    assert delta(api_before, api_after, requests, route=SUBMIT, method="POST", status="401") == 2
    latency = "predq_http_request_duration_seconds_count"
    assert delta(api_before, api_after, latency, route=SUBMIT, method="POST") == 18
    assert delta(api_before, api_after, "predq_cache_misses_total", model="iris") == 12
    assert delta(api_before, api_after, "predq_cache_hits_total", model="iris") == 5
    assert (
        delta(api_before, api_after, "predq_jobs_total", model="iris", version="1", status="succeeded") == 1
    )

    # Worker: jobs, batches, rows, model time, queue wait, end-to-end time.
    assert (
        delta(worker_before, worker_after, "predq_jobs_total", model="iris", version="1", status="succeeded")
        == 12
    )
    assert n_rows == 12 and n_batches >= 1
    assert delta(worker_before, worker_after, "predq_batch_size_rows_count", model="iris") == n_batches
    assert delta(worker_before, worker_after, "predq_batch_size_rows_sum", model="iris") == 12
    assert (
        delta(
            worker_before,
            worker_after,
            "predq_inference_duration_seconds_count",
            model="iris",
            backend="sklearn",
        )
        == n_batches
    )
    assert delta(worker_before, worker_after, "predq_queue_wait_seconds_count", model="iris") == 12
    assert delta(worker_before, worker_after, "predq_job_duration_seconds_count", model="iris") == 12
    assert 0 < delta(worker_before, worker_after, "predq_job_duration_seconds_sum", model="iris") < 12 * 20


def test_the_oldest_queued_job_and_queue_depth_are_exported(client, svc, registered):
    stuck = insert_queued_job(svc, "diabetes", [[0.0] * 10], created_at=utcnow() - timedelta(minutes=10))
    # Two items on a queue no task was sent for, so no worker drains it during the test.
    queue = RowQueue(svc.redis, "depth-check", 3)
    for _ in range(2):
        queue.push(encode_item(str(uuid.uuid4()), [[1.0]], n_rows=1, created_at=utcnow().isoformat()))
    try:
        samples = scrape_test_client(client)
        age = value(samples, "predq_oldest_queued_job_age_seconds", model="diabetes", version="1")
        assert 600 <= age < 3600
        assert value(samples, "predq_queue_depth_jobs", model="depth-check", version="3") == 2
    finally:
        svc.redis.delete(queue.key)
        with svc.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == stuck).values(status="failed", completed_at=utcnow()))
