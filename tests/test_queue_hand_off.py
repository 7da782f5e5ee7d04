"""Who wakes a worker: a push sends a task only when no worker holds the queue, and a
worker runs batches back to back until it lets go of an empty queue."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

from redis import Redis
from sqlalchemy import select

from app.celery_app import RUN_BATCH, make_celery
from app.db import Job, utcnow
from app.predictions.items import encode_item
from app.predictions.queue import ACTIVE_TTL_SECONDS, RowQueue, active_key
from tests.fault_stack import LocalRedis
from tests.helpers import expected_outputs, insert_queued_job, scrape_test_client, stored_estimator
from workers import batch_window
from workers.batching import collect, drain, run_batch, take

ROW = [5.1, 3.5, 1.4, 0.2]


def _queued(svc, model: str, n: int) -> list[uuid.UUID]:
    """``n`` one-row jobs stored as the API stores them, and pushed without waking anyone."""
    ids = [insert_queued_job(svc, model, [[*ROW[:3], 0.1 * i]]) for i in range(n)]
    queue = RowQueue(svc.redis, model, 1)
    for i, job_id in enumerate(ids):
        queue.push(encode_item(str(job_id), [[*ROW[:3], 0.1 * i]], n_rows=1, created_at=utcnow().isoformat()))
    return ids


def _statuses(svc, ids: list[uuid.UUID]) -> list[str]:
    with svc.engine.connect() as conn:
        found = dict(conn.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())
    return [found[i] for i in ids]


def test_a_push_wakes_a_worker_only_while_none_holds_the_queue(svc):
    model = f"hand-off-{uuid.uuid4().hex[:6]}"
    queue = RowQueue(svc.redis, model, 1)

    def item() -> bytes:
        return encode_item(str(uuid.uuid4()), [ROW], n_rows=1, created_at=utcnow().isoformat())

    assert queue.push(item()) is True, "nobody holds the queue: the caller must wake a worker"
    assert 0 < svc.redis.ttl(queue.active) <= ACTIVE_TTL_SECONDS, "a hold whose worker died expires"
    assert queue.push(item()) is False, "the first push's task is on its way"
    got, left = queue.pop_batch(1, release=True)
    assert len(got) == 1 and left == 1
    assert queue.push(item()) is False, "a worker that popped rows holds the queue"
    assert len(queue.pop_batch(10, release=True)[0]) == 2
    assert svc.redis.exists(active_key(model, 1)), "popping the last rows does not let go yet"
    assert queue.pop_batch(10, release=False) == ([], 0)
    assert svc.redis.exists(active_key(model, 1)), "only a pop with release lets go"
    assert queue.pop_batch(10, release=True) == ([], 0)
    assert not svc.redis.exists(active_key(model, 1))
    assert queue.push(item()) is True, "the queue was let go of: this push wakes a worker"
    svc.redis.delete(queue.key, queue.active)  # rows of no job: nothing later should find them


def test_a_worker_that_emptied_the_queue_takes_a_push_made_while_it_lingers(svc):
    """Light traffic: the next row comes soon after the queue empties, and the worker
    still holding the queue takes it; no task is sent. With nothing pushed it lets go."""
    model = f"linger-{uuid.uuid4().hex[:6]}"
    queue = RowQueue(svc.redis, model, 1)
    assert (
        queue.push(encode_item(str(uuid.uuid4()), [ROW], n_rows=1, created_at=utcnow().isoformat())) is True
    )
    assert len(queue.pop_batch(10)[0]) == 1

    late = encode_item(str(uuid.uuid4()), [ROW, ROW], n_rows=2, created_at=utcnow().isoformat())
    pushed: list[bool] = []
    pusher = threading.Timer(0.3, lambda: pushed.append(queue.push(late)))
    pusher.start()
    tick = time.monotonic()
    items, left = collect(queue, max_rows=10, max_delay=0.01, linger=5.0)
    waited = time.monotonic() - tick
    pusher.join()

    assert [len(item.rows) for item in items] == [2] and left == 0
    assert pushed == [False], "the lingering worker held the queue: the push woke no one"
    assert 0.25 < waited < 2.0, "collect returned when the push came, not when the linger ran out"
    assert svc.redis.exists(queue.active)

    tick = time.monotonic()
    assert collect(queue, max_rows=10, max_delay=0.01, linger=0.2) == ([], 0)
    assert time.monotonic() - tick >= 0.2
    assert not svc.redis.exists(queue.active), "nothing came during the linger: the queue is let go of"


def _one_row_item() -> bytes:
    return encode_item(str(uuid.uuid4()), [ROW], n_rows=1, created_at=utcnow().isoformat())


def test_a_lone_request_on_an_idle_queue_is_taken_at_once_without_the_batch_wait(svc):
    """Nobody else is coming: the window (here half a second) is not waited out."""
    queue = RowQueue(svc.redis, f"lone-{uuid.uuid4().hex[:6]}", 1)
    queue.push(_one_row_item())
    for _ in range(2):  # the first pop, and a lone one after a lone one
        tick = time.monotonic()
        items, _ = collect(queue, max_rows=10, max_delay=0.5, linger=1.0)
        assert len(items) == 1
        assert time.monotonic() - tick < 0.25, "a lone request waited for a batch no one else would fill"
        threading.Timer(0.05, lambda: queue.push(_one_row_item())).start()
    collect(queue, max_rows=10, max_delay=0.0, linger=1.0)
    svc.redis.delete(queue.key, queue.active)


def test_requests_that_queued_together_wait_for_the_batch_to_fill(svc):
    """Two requests found at once mean callers overlap: the window is waited, and a third
    pushed within it rides along in the same batch."""
    queue = RowQueue(svc.redis, f"together-{uuid.uuid4().hex[:6]}", 1)
    queue.push(_one_row_item())
    queue.push(_one_row_item())
    threading.Timer(0.1, lambda: queue.push(_one_row_item())).start()
    items, left = collect(queue, max_rows=10, max_delay=0.4, linger=1.0)
    assert (len(items), left) == (3, 0), "the request pushed within the window joined the batch"
    svc.redis.delete(queue.key, queue.active)


def test_drain_runs_batches_back_to_back_until_the_queue_is_empty(svc, artifacts):
    """More than a batch waits, so drain also wakes another worker, once (not a task per pop
    that leaves rows behind); that task is parked on a queue no worker reads (a real Celery
    app, routed elsewhere), so every batch here is drain's own."""
    model = f"drain-{uuid.uuid4().hex[:6]}"
    svc.registry.register(model, artifacts["iris"])
    parked = f"parked-{model}"
    celery = make_celery(svc.settings)
    celery.conf.task_routes = {RUN_BATCH: {"queue": parked}}
    two_per_batch = dataclasses.replace(svc, settings=svc.settings.replace(max_batch_rows=2), celery=celery)
    ids = _queued(svc, model, 5)

    try:
        report = drain(two_per_batch, model, 1)
        woken = svc.redis.llen(parked)
    finally:
        svc.redis.delete(parked)

    assert (report.batches, report.rows, report.jobs, report.handed_on) == (3, 5, 5, False)
    assert woken == 1, "one wake-up while rows were left behind, not one for each pop that left some"
    assert _statuses(svc, ids) == ["succeeded"] * 5
    assert not svc.redis.exists(active_key(model, 1)), "an empty queue is let go of"


def test_rows_left_behind_wake_another_worker_again_once_the_interval_has_passed(monkeypatch):
    monkeypatch.setattr(batch_window, "WAKE_INTERVAL_SECONDS", 0.2)
    queue = (f"wake-{uuid.uuid4().hex[:6]}", 1, False)

    assert batch_window.may_wake(queue), "the first pop that leaves rows behind wakes a worker"
    assert not batch_window.may_wake(queue), "the next, within the interval, does not"
    time.sleep(0.25)
    assert batch_window.may_wake(queue), "past the interval, rows still left behind wake one again"


def test_drain_hands_on_to_a_fresh_task_after_max_task_seconds(svc, artifacts, worker):
    """With no time to spare the task runs one batch and sends a task for the rest,
    which the real worker picks up and finishes."""
    model = f"hand-on-{uuid.uuid4().hex[:6]}"
    svc.registry.register(model, artifacts["iris"])
    impatient = dataclasses.replace(svc, settings=svc.settings.replace(max_batch_rows=1, max_task_seconds=0))
    ids = _queued(svc, model, 3)

    report = drain(impatient, model, 1)

    assert (report.batches, report.rows, report.handed_on) == (1, 1, True)
    deadline = time.monotonic() + 30
    while _statuses(svc, ids) != ["succeeded"] * 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _statuses(svc, ids) == ["succeeded"] * 3, "the task it sent finished the other jobs"


def test_an_explained_batch_holds_at_most_explain_max_rows_and_a_plain_one_more(svc):
    """shap takes a thousand times the model's time a row: an explained batch stays one
    request's worth (EXPLAIN_MAX_ROWS), a plain one takes up to MAX_BATCH_ROWS."""
    cap = svc.settings.explain_max_rows
    rows_each = cap * 2 // 5  # three items: more than the cap, less than a plain batch
    assert 3 * rows_each <= svc.settings.max_batch_rows
    taken = {}
    for explained in (True, False):
        # Items of no stored job: a worker woken for the rest claims nothing and drops them.
        model = f"explain-cap-{uuid.uuid4().hex[:6]}"
        queue = RowQueue(svc.redis, model, 1, explained=explained)
        for _ in range(3):
            queue.push(
                encode_item(
                    str(uuid.uuid4()), [ROW] * rows_each, n_rows=rows_each, created_at=utcnow().isoformat()
                )
            )
        taken[explained] = sum(len(item.rows) for item in take(svc, model, 1, explained))
        svc.redis.delete(queue.key, queue.active)

    assert taken[True] == 2 * rows_each <= cap, taken
    assert taken[False] == 3 * rows_each, taken


def test_an_item_the_wait_took_is_answered_when_redis_refuses_to_take_it_back(
    svc, artifacts, client, tmp_path
):
    """Redis at its maxmemory under noeviction refuses the pop's first write, the put-back of
    the item a lingering worker's blocking wait took: that item is then in the worker's memory
    only, and the worker runs it at once rather than lose it."""
    model = f"refused-{uuid.uuid4().hex[:6]}"
    svc.registry.register(model, artifacts["iris"])
    job = insert_queued_job(svc, model, [ROW])
    # A Redis of this test's own: its memory cap must not touch the session's.
    server = LocalRedis(tmp_path)
    server.start()
    own = Redis.from_url(server.url)
    settings = svc.settings.replace(queue_linger_seconds=10.0, max_batch_delay=0.0)
    lingering = dataclasses.replace(svc, settings=settings, redis=own, redis_wait=own, cache=own)
    queue = RowQueue(own, model, 1)

    def push_and_run_out_of_memory() -> None:
        time.sleep(0.5)  # the worker is in its blocking wait by then
        with own.pipeline(transaction=True) as both:  # one step: the wait wakes after both
            both.rpush(queue.key, encode_item(str(job), [ROW], n_rows=1, created_at=utcnow().isoformat()))
            both.config_set("maxmemory", 1)
            both.execute()

    refused_before = _put_back_refused(client)
    pusher = threading.Thread(target=push_and_run_out_of_memory)
    pusher.start()
    try:
        report = run_batch(lingering, model, 1)
    finally:
        pusher.join()
        server.kill()

    assert report.jobs == 1, "the worker ran the item it could not put back"
    with svc.engine.connect() as conn:
        status, outputs = conn.execute(select(Job.status, Job.outputs).where(Job.id == job)).one()
    assert status == "succeeded"
    assert outputs == expected_outputs(stored_estimator(svc, model), [ROW])
    assert _put_back_refused(client) == refused_before + 1, "counted, for the operator"


def _put_back_refused(client) -> float:
    return scrape_test_client(client).get(("predq_put_back_refused_total", frozenset()), 0.0)
