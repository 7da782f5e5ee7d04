"""Tenant isolation: a job is read, and given feedback, only by the key that made it or an admin key."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import create_app
from app.db import Feedback, Job, utcnow
from app.predictions.queue import result_key
from tests.helpers import client_for, insert_queued_job
from workers.sweeper import requeue_stuck_jobs

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def other_token(svc) -> str:
    """A second predict key: another tenant."""
    return svc.keys.create(f"tenant-b-{uuid.uuid4().hex[:8]}", ["predict"])[1]


@pytest.fixture
def other(app, other_token):
    return client_for(app, other_token)


@pytest.fixture
def admin(app, tokens):
    return client_for(app, tokens["admin"])


def _not_found_like_an_unknown_id(response, job_id: str) -> None:
    assert response.status_code == 404, response.json
    assert response.json["error"]["code"] == "job_not_found"
    assert response.json["error"]["details"] == {"id": job_id}, "nothing says the job exists"


@pytest.mark.parametrize("wait", [0, 20], ids=["stored at submit", "stored by the worker"])
def test_another_key_cannot_read_a_job_but_its_owner_and_an_admin_can(
    client, other, admin, svc, registered, worker, wait
):
    job = client.post(f"/v1/models/iris/predictions?wait={wait}", json={"inputs": ROWS}).json
    done = client.get(f"/v1/predictions/{job['id']}?wait=20").json
    assert done["status"] == "succeeded"

    # Answered from Redis (the finished view is there), then from the database.
    _not_found_like_an_unknown_id(other.get(f"/v1/predictions/{job['id']}"), job["id"])
    _not_found_like_an_unknown_id(other.get(f"/v1/predictions/{job['id']}?wait=1"), job["id"])
    svc.redis.delete(result_key(job["id"]))
    _not_found_like_an_unknown_id(other.get(f"/v1/predictions/{job['id']}"), job["id"])

    assert client.get(f"/v1/predictions/{job['id']}").json["outputs"] == done["outputs"]
    assert admin.get(f"/v1/predictions/{job['id']}").json["outputs"] == done["outputs"]


def test_another_key_cannot_post_feedback_on_a_job_and_its_owner_still_can(
    client, other, svc, registered, worker
):
    job = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": ROWS}).json
    assert job["status"] == "succeeded"

    _not_found_like_an_unknown_id(
        other.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [0, 2]}), job["id"]
    )
    with svc.engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(Feedback).where(Feedback.job_id == uuid.UUID(job["id"]))
        )
        assert stored.scalar_one() == 0, "the refused feedback stored nothing"

    assert client.post(f"/v1/predictions/{job['id']}/feedback", json={"labels": [0, 2]}).status_code == 201


def test_an_idempotency_key_belongs_to_the_api_key_that_sent_it(client, other, registered):
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    fresh = [[5.0 + uuid.uuid4().int % 1000 / 1e4, 3.1, 1.5, 0.2]]  # not cached: answered 202

    mine = client.post("/v1/models/iris/predictions", json={"inputs": fresh}, headers=headers)
    theirs = other.post("/v1/models/iris/predictions", json={"inputs": ROWS}, headers=headers)
    replayed = client.post("/v1/models/iris/predictions", json={"inputs": fresh}, headers=headers)

    assert mine.status_code in (200, 202) and theirs.status_code in (200, 202), (
        "no 409 naming another key's job"
    )
    assert theirs.json["id"] != mine.json["id"]
    assert replayed.json["id"] == mine.json["id"]


def test_a_job_requeued_by_the_sweeper_stays_its_owners(client, other, svc, tokens, registered, worker):
    owner = svc.keys.authenticate(tokens["predict"])
    old = utcnow() - timedelta(seconds=svc.settings.stuck_job_seconds + 5)
    job_id = str(insert_queued_job(svc, "iris", ROWS[:1], created_at=old, owner=owner.key_id))

    assert requeue_stuck_jobs(svc) >= 1
    done = client.get(f"/v1/predictions/{job_id}?wait=20").json

    assert done["status"] == "succeeded"
    _not_found_like_an_unknown_id(other.get(f"/v1/predictions/{job_id}"), job_id)


def test_every_job_records_the_key_that_submitted_it(client, svc, tokens, registered, worker):
    owner = svc.keys.authenticate(tokens["predict"])
    queued = client.post("/v1/models/iris/predictions", json={"inputs": ROWS}).json
    waited = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": [[4.4, 2.9, 1.4, 0.2]]}).json
    assert waited["status"] == "succeeded"

    with svc.engine.connect() as conn:
        owners = conn.execute(
            select(Job.owner_key_id).where(Job.id.in_([uuid.UUID(queued["id"]), uuid.UUID(waited["id"])]))
        ).scalars()
        assert list(owners) == [owner.key_id] * 2


def test_with_auth_off_every_caller_reads_every_job(settings, svc, registered, worker):
    open_client = create_app(settings.replace(auth_enabled=False)).test_client()
    job = open_client.post("/v1/models/iris/predictions?wait=20", json={"inputs": ROWS}).json

    assert job["status"] == "succeeded"
    assert open_client.get(f"/v1/predictions/{job['id']}").json["outputs"] == job["outputs"]
