"""Waiting for a batch job's end (GET /v1/batch-jobs/{id}?wait=S) instead of polling: the read
is held until the job ends (a mark in Redis, app/batch_jobs/storage.py) or S seconds pass."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import predq
import pyarrow.parquet as pq
import pytest
from predq import _batch
from redis import Redis

from app import create_app
from app.batch_jobs import jobs
from tests.helpers import arrow_table, client_for, iris_rows
from workers import bulk as bulk_scoring

PARQUET = "application/vnd.apache.parquet"
FINISHED = ("succeeded", "partial", "failed", "cancelled")


def parquet_bytes(rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(arrow_table(iris_rows(rows, seed=7, decimals=2)), sink)
    return sink.getvalue()


@pytest.fixture
def unserved(settings, tokens):
    """An app whose bulk tasks go to an in-memory broker no worker reads: chunks stay queued
    until a test scores them itself (workers/bulk.py ``score_chunk``, as a bulk worker does)."""
    app = create_app(settings.replace(broker_url="memory://"))
    return app, client_for(app, tokens["predict"])


@pytest.fixture
def later() -> Iterator[Callable[[float, Callable[[], Any]], None]]:
    """Run a function on a thread after some seconds; each one is joined when the test ends."""
    timers: list[threading.Timer] = []

    def run(seconds: float, function: Callable[[], Any]) -> None:
        timers.append(timer := threading.Timer(seconds, function))
        timer.start()

    yield run
    for timer in timers:
        timer.join(timeout=30)


def submit(client: Any, rows: int = 1500) -> dict[str, Any]:
    response = client.post("/v1/models/iris/batch-jobs", data=parquet_bytes(rows), content_type=PARQUET)
    assert response.status_code == 202, response.json
    return response.json


def timed_get(client: Any, path: str) -> tuple[Any, float]:
    tick = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - tick


def test_a_waiting_read_returns_as_soon_as_the_running_job_finishes(unserved, svc, registered, later):
    _, client = unserved
    job = submit(client)  # two chunks of 1,000 rows
    bulk_scoring.score_chunk(svc, job["id"], 0)
    later(1.0, lambda: bulk_scoring.score_chunk(svc, job["id"], 1))

    response, seconds = timed_get(client, f"/v1/batch-jobs/{job['id']}?wait=10")

    assert response.status_code == 200, response.json
    assert response.json["status"] == "succeeded", response.json
    assert 0.9 <= seconds < 4, f"held until the last chunk ended (~1 s), not the whole 10 s: {seconds:.2f} s"


def test_a_waiting_read_of_a_job_that_does_not_end_answers_its_status_after_the_wait(
    unserved, svc, registered
):
    _, client = unserved
    job = submit(client)

    response, seconds = timed_get(client, f"/v1/batch-jobs/{job['id']}?wait=1")

    assert response.status_code == 200, response.json
    assert response.json["status"] == "queued", "the job as it is when the wait runs out, not an error"
    assert 0.9 <= seconds < 3, f"held for the wait asked, about 1 s: {seconds:.2f} s"
    client.delete(f"/v1/batch-jobs/{job['id']}")


def test_cancelling_a_job_releases_its_waiters_at_once(unserved, tokens, registered, later):
    app, client = unserved
    job = submit(client)
    canceller = client_for(app, tokens["predict"])  # a test client of its own, on the timer's thread
    later(0.5, lambda: canceller.delete(f"/v1/batch-jobs/{job['id']}"))

    response, seconds = timed_get(client, f"/v1/batch-jobs/{job['id']}?wait=10")

    assert response.json["status"] == "cancelled", response.json
    assert seconds < 3, f"released by the cancel (~0.5 s), not the 10 s wait: {seconds:.2f} s"


@pytest.mark.parametrize("wait", ["abc", "-1", "31", "nan"])
def test_a_wait_that_is_not_zero_to_thirty_seconds_is_refused_with_a_json_error(unserved, registered, wait):
    _, client = unserved
    job = submit(client, rows=10)

    response = client.get(f"/v1/batch-jobs/{job['id']}?wait={wait}")

    assert response.status_code == 422, "the same answer as a prediction's ?wait= (decoding.wait_seconds)"
    assert response.is_json and response.json["error"]["code"] == "invalid_input", response.data
    assert "wait" in response.json["error"]["details"]["fields"], response.json
    client.delete(f"/v1/batch-jobs/{job['id']}")


def test_another_keys_job_is_not_found_before_any_wait(unserved, svc, registered):
    app, client = unserved
    other = client_for(app, svc.keys.create(f"wait-other-{uuid.uuid4().hex[:6]}", ["predict"])[1])
    job = submit(client)

    response, seconds = timed_get(other, f"/v1/batch-jobs/{job['id']}?wait=5")

    assert response.status_code == 404 and response.json["error"]["code"] == "batch_job_not_found"
    assert seconds < 1, f"refused at once, not after the wait: {seconds:.2f} s"
    client.delete(f"/v1/batch-jobs/{job['id']}")


def test_a_wait_with_redis_down_answers_the_current_view(svc, unserved, registered):
    _, client = unserved
    job = submit(client)
    closed = Redis(port=1, socket_connect_timeout=0.5)  # nothing listens on port 1
    down = dataclasses.replace(svc, redis_wait=closed)

    view = jobs.get(down, job["id"], None, wait=5)

    assert view["status"] == "queued", "the view from the database, not an error"
    client.delete(f"/v1/batch-jobs/{job['id']}")


def test_the_clients_follow_returns_without_sleeping_a_poll_period(
    app, tokens, registered, bulk_worker, tmp_path
):
    (tmp_path / "in.parquet").write_bytes(parquet_bytes(1500))
    transport = httpx.WSGITransport(app=app)
    tick = time.monotonic()

    with predq.Client("http://predq", tokens["predict"], transport=transport) as client:
        job = client.score_file(
            "iris", tmp_path / "in.parquet", tmp_path / "out.parquet", progress=False, poll_seconds=120
        )

    seconds = time.monotonic() - tick
    assert job["status"] == "succeeded", job
    assert seconds < 30, f"long-polled to the end, not slept a 120 s poll period first: {seconds:.1f} s"
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 1500


def test_the_follow_sleeps_a_poll_period_after_an_answer_the_server_did_not_hold():
    # An older server ignores ?wait (or its Redis is down): the follow polls, not in a tight loop.
    running = {"status": "running"}

    assert _batch.pause(running, hold=30, poll=1.0, took=0.01, remaining=float("inf")) == 1.0


def test_the_follow_reads_again_at_once_after_a_held_answer():
    running = {"status": "running"}

    assert _batch.pause(running, hold=1.0, poll=1.0, took=1.0, remaining=float("inf")) == 0.0
