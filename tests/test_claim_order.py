"""Claiming and finishing jobs: pool processes writing overlapping jobs in different orders never
deadlock (they lock in id order), and a job done for good keeps its answer."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from app.db import Job, utcnow
from tests.helpers import insert_queued_job
from workers.batch_store import claim, finish_jobs


def test_claims_and_finishes_of_the_same_jobs_in_opposite_orders_do_not_deadlock(svc):
    # What a sweep pile-up does: the same stuck jobs queued twice, taken by two processes.
    model = f"overlap-{uuid.uuid4().hex[:6]}"
    ids = [str(insert_queued_job(svc, model, [[1.0, 2.0, 3.0, 4.0]])) for _ in range(40)]
    errors: list[str] = []

    def worker(order: list[str]) -> None:
        for _ in range(100):
            try:
                claim(svc, order, utcnow())
                with svc.engine.begin() as conn:
                    # After the first round the claims find nothing, but every finish still locks
                    # all 40 rows (to see which are done for good): every round contends again.
                    results = [{"id": j, "status": "failed", "outputs": None, "error": None} for j in order]
                    finish_jobs(conn, results, None, utcnow())
            except DBAPIError as exc:
                errors.append(type(exc.orig).__name__)

    threads = [threading.Thread(target=worker, args=(order,)) for order in (ids, ids[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [], f"{len(errors)} rounds failed: {sorted(set(errors))}"


def test_a_job_done_for_good_keeps_its_answer_and_is_reported_left_as_it_was(svc):
    # A slow batch finishing after the sweeper expired one of its jobs, and after a duplicate
    # of another (re-queued) was answered failed elsewhere: neither changes, and store() leaves
    # both out of what it announces and publishes.
    model = f"done-{uuid.uuid4().hex[:6]}"
    expired, failed, fresh = (insert_queued_job(svc, model, [[1.0, 2.0, 3.0, 4.0]]) for _ in range(3))
    claim(svc, [str(expired), str(failed), str(fresh)], utcnow())
    with svc.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == expired).values(status="expired"))
        conn.execute(update(Job).where(Job.id == failed).values(status="failed"))

    with svc.engine.begin() as conn:
        results = [{"id": str(j), "status": "succeeded", "outputs": [{"prediction": 1}], "error": None}
                   for j in (expired, failed, fresh)]  # fmt: skip
        left = finish_jobs(conn, results, None, utcnow())

    assert left == {str(expired), str(failed)}
    with svc.engine.connect() as conn:
        statuses = dict(conn.execute(select(Job.id, Job.status).where(Job.model_name == model)).all())
    assert statuses == {expired: "expired", failed: "failed", fresh: "succeeded"}, (
        "a finished job's status never changes, not even to a better answer"
    )
    assert claim(svc, [str(failed)], utcnow()) == set(), "a failed job is never claimed again"
