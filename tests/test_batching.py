"""Many concurrent single-row requests are served by few model calls."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from app.db import Batch, Job
from tests.helpers import bearer, expected_outputs, iris_rows, stored_estimator

REQUESTS = 1000
CLIENTS = 100


def test_1000_concurrent_single_row_requests_share_model_calls(svc, registered, worker, api_server, tokens):
    # Distinct rows, so no request is answered from the cache.
    rows = iris_rows(REQUESTS, seed=7).tolist()
    local = threading.local()

    def submit(row: list[float]) -> dict:
        if not hasattr(local, "client"):
            # Idle connections are dropped before the server's keep-alive closes them, so a
            # request never goes out on a connection the server is closing.
            local.client = httpx.Client(
                base_url=api_server,
                timeout=60,
                headers=bearer(tokens["predict"]),
                limits=httpx.Limits(keepalive_expiry=2.0),
            )
        response = local.client.post("/v1/models/iris/predictions?wait=30", json={"inputs": [row]})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(CLIENTS) as pool:
        jobs = list(pool.map(submit, rows))

    assert all(job["status"] == "succeeded" for job in jobs)
    outputs = [job["outputs"][0] for job in jobs]
    assert outputs == expected_outputs(stored_estimator(svc, "iris"), rows)

    ids = [uuid.UUID(job["id"]) for job in jobs]
    with svc.engine.connect() as conn:
        batch_ids = conn.execute(select(Job.batch_id).where(Job.id.in_(ids))).scalars().all()
        model_calls = len(set(batch_ids))
        rows_in_batches = conn.execute(
            select(func.sum(Batch.n_rows)).where(Batch.id.in_(set(batch_ids)))
        ).scalar_one()
    mean_batch = REQUESTS / model_calls
    print(
        f"\n{REQUESTS} single-row requests from {CLIENTS} clients: {model_calls} model calls, "
        f"mean batch size {mean_batch:.1f}"
    )
    assert None not in batch_ids
    assert rows_in_batches == REQUESTS, "each row was computed exactly once"
    assert model_calls <= REQUESTS / 5, f"{model_calls} model calls for {REQUESTS} requests"
