"""Pool processes writing overlapping jobs in different orders never deadlock (they lock in id order)."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy.exc import DBAPIError

from app.db import utcnow
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
                    # "failed" keeps the jobs claimable, so every round contends again.
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
