"""Jobs a client can steer (issue 32): a done flag, deadlines (expired), cancellation,
priorities. Real PostgreSQL and Redis; the worker's own code runs in this process
(``drain``), so a model that counts its calls proves a job was never run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import joblib
import pytest
from redis import Redis
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import make_url, select, update

from app.db import Job, make_engine, utcnow
from app.predictions import ending, steering, submit
from app.predictions.items import encode_item
from app.predictions.queue import CANCEL_PREFIX, RowQueue, active_key, queue_keys
from scripts.local import free_port, process_group
from tests.helpers import client_for, count_jobs, insert_queued_job, iris_rows, scrape_test_client
from tests.slow_model import CALLS, counting_identity
from workers.batching import claim_items, drain
from workers.sweeper import expire_overdue_jobs, requeue_stuck_jobs, wake_workers


@pytest.fixture(scope="module")
def counting(svc: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose every call this process counts (tests/slow_model.py), registered as v1."""
    x, y = load_iris(return_X_y=True)
    model = make_pipeline(
        FunctionTransformer(counting_identity), RandomForestClassifier(n_estimators=5, random_state=0)
    ).fit(x, y)
    path = tmp_path_factory.mktemp("counting") / "counting.joblib"
    joblib.dump(model, path)
    name = f"counting-{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, path)
    return name


@contextlib.contextmanager
def worker_stopped(svc: Any, model: str) -> Iterator[None]:
    """No worker runs the model's jobs meanwhile: the queue is marked as held, so a submit
    wakes none (a worker started later is this process's ``drain``)."""
    key = active_key(model, 1)
    svc.redis.set(key, b"1", ex=600)
    try:
        yield
    finally:
        svc.redis.delete(key)


def _submit(client: Any, model: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model}/predictions", json={"inputs": iris_rows(1).tolist(), **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def _rows_of(svc: Any, ids: list[str]) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        rows = conn.execute(select(Job.__table__).where(Job.id.in_([uuid.UUID(i) for i in ids]))).mappings()
        return {str(row["id"]): row for row in rows}


# -- deadlines ----------------------------------------------------------------------------


def test_200_jobs_past_a_50_ms_deadline_all_expire_and_none_runs(client, svc, counting):
    before_jobs = count_jobs(svc)
    with worker_stopped(svc, counting):
        views = [_submit(client, counting, deadline_ms=50) for _ in range(200)]
        time.sleep(0.1)
    assert all(view["done"] is False and view["deadline"] is not None for view in views)
    calls = dict(CALLS)

    report = drain(svc, counting, 1)

    assert CALLS == calls, "the model was never called"
    assert report.jobs == 0 and report.batches == 0
    ids = [view["id"] for view in views]
    rows = _rows_of(svc, ids)
    assert len(rows) == 200 and count_jobs(svc) == before_jobs + 200, "none lost"
    assert {row["status"] for row in rows.values()} == {"expired"}
    assert {row["error"]["code"] for row in rows.values()} == {"deadline_exceeded"}
    polled = client.get(f"/v1/predictions/{ids[0]}").get_json()
    assert polled["status"] == "expired" and polled["done"] is True
    assert polled["error"]["code"] == "deadline_exceeded" and polled["outputs"] is None
    assert not any(svc.redis.exists(key) for key in queue_keys(counting, 1)), "nothing left queued"
    samples = scrape_test_client(client)
    expired = (
        "predq_jobs_total",
        frozenset({"model": counting, "version": "1", "status": "expired"}.items()),
    )
    assert samples[expired] == 200


def test_a_deadline_passed_while_the_batch_forms_expires_the_job_unrun(client, svc, counting):
    with worker_stopped(svc, counting):
        view = _submit(client, counting, deadline_ms=1500)
        items, _ = RowQueue(svc.redis, counting, 1).pop_batch(10)
    assert [item.job_id for item in items] == [view["id"]], "popped before its deadline"
    time.sleep(1.6)
    calls = dict(CALLS)

    work = claim_items(svc, counting, 1, items)

    assert work.items == [] and CALLS == calls
    row = _rows_of(svc, [view["id"]])[view["id"]]
    assert row["status"] == "expired" and row["started_at"] is None


def test_the_sweeper_expires_jobs_past_their_deadline_whose_rows_redis_lost(svc, counting):
    lost = insert_queued_job(svc, counting, iris_rows(1).tolist())
    future = insert_queued_job(svc, counting, iris_rows(1).tolist())
    with svc.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == lost).values(deadline=utcnow() - timedelta(seconds=1)))
        conn.execute(update(Job).where(Job.id == future).values(deadline=utcnow() + timedelta(hours=1)))

    assert expire_overdue_jobs(svc) >= 1
    assert expire_overdue_jobs(svc) == 0, "an expired job is expired once"

    rows = _rows_of(svc, [str(lost), str(future)])
    assert rows[str(lost)]["status"] == "expired"
    assert rows[str(future)]["status"] == "queued"
    ending.end_unrun(svc, ending.JobStatus.CANCELLED, [future])  # not left for other tests


def test_a_database_error_expiring_a_batchs_late_item_leaves_it_to_the_sweeper_and_runs_the_rest(
    client, svc, counting
):
    with worker_stopped(svc, counting):
        late = _submit(client, counting, deadline_ms=50)
        other = _submit(client, counting)
        time.sleep(0.1)
    # The late job's row is locked by another transaction, and the worker's database gives up
    # waiting for a lock after 200 ms: ending that job fails, as on a database in trouble.
    url = make_url(svc.settings.database_url).update_query_dict({"options": "-c lock_timeout=200"})
    impatient = dataclasses.replace(svc, engine=make_engine(url.render_as_string(hide_password=False), 2))
    with svc.engine.connect() as locker, locker.begin():
        locker.execute(select(Job.id).where(Job.id == uuid.UUID(late["id"])).with_for_update())

        report = drain(impatient, counting, 1)

    assert (report.jobs, report.rows) == (1, 1), "the rest of the batch ran: the other job's row"
    rows = _rows_of(svc, [late["id"], other["id"]])
    assert rows[other["id"]]["status"] == "succeeded"
    assert rows[late["id"]]["status"] == "queued", "left for the sweeper, never run"
    assert expire_overdue_jobs(svc) >= 1
    late_row = _rows_of(svc, [late["id"]])[late["id"]]
    assert late_row["status"] == "expired" and late_row["started_at"] is None
    impatient.engine.dispose()


def test_a_waiting_submit_whose_job_expires_hears_so(client, svc, counting):
    """The deferred road: the job has no row until the worker writes it, expired."""
    import threading

    answers: list[Any] = []
    with worker_stopped(svc, counting):
        thread = threading.Thread(
            target=lambda: answers.append(
                client.post(
                    f"/v1/models/{counting}/predictions?wait=5",
                    json={"inputs": iris_rows(1).tolist(), "deadline_ms": 50},
                )
            )
        )
        thread.start()
        time.sleep(0.5)
    calls = dict(CALLS)
    drain(svc, counting, 1)
    thread.join(10)
    assert answers and answers[0].status_code == 200
    view = answers[0].get_json()
    assert view["status"] == "expired" and view["done"] is True
    assert _rows_of(svc, [view["id"]])[view["id"]]["status"] == "expired"
    assert CALLS == calls


def test_a_models_default_deadline_and_queue_ttl_apply_when_a_submit_names_none(
    app, client, svc, tokens, counting, settings
):
    admin = client_for(app, tokens["admin"])
    path = f"/v1/models/{counting}/deadline"
    assert client.put(path, json={"default_deadline_ms": 5000}).status_code == 403, "admins only"
    assert admin.put(path, json={"default_deadline_ms": 0}).status_code == 422
    assert admin.put(path, json={"default_deadline_ms": "5"}).status_code == 422
    assert admin.put("/v1/models/no-such-model/deadline", json={"default_deadline_ms": 5}).status_code == 404
    assert admin.put(path, json={"default_deadline_ms": 5000}).status_code == 200
    assert client.get(path).get_json() == {"model": counting, "default_deadline_ms": 5000}
    try:
        with worker_stopped(svc, counting):
            view = _submit(client, counting)
            own = _submit(client, counting, deadline_ms=60_000)
        waited = _deadline_ms(view)
        assert 4900 <= waited <= 5100
        assert 59_900 <= _deadline_ms(own) <= 60_100, "the submit's own deadline wins"
    finally:
        assert admin.put(path, json={"default_deadline_ms": None}).status_code == 200
    ttl = dataclasses.replace(svc, settings=settings.replace(queue_ttl_seconds=2.5))
    assert steering.deadline_ms_for(ttl, counting, None) == 2500
    assert steering.deadline_ms_for(svc, counting, None) is None, "unset: no deadline"
    ending.end_unrun(svc, ending.JobStatus.CANCELLED, [uuid.UUID(view["id"]), uuid.UUID(own["id"])])


def _deadline_ms(view: dict[str, Any]) -> float:
    from datetime import datetime

    span = datetime.fromisoformat(view["deadline"]) - datetime.fromisoformat(view["created_at"])
    return span.total_seconds() * 1000


# -- cancellation -------------------------------------------------------------------------


def test_cancel_a_queued_job_only_as_its_owner_or_an_admin(app, client, svc, tokens, counting):
    with worker_stopped(svc, counting):
        view = _submit(client, counting)
        job_path = f"/v1/predictions/{view['id']}"
        _, other_token = svc.keys.create(f"other-{uuid.uuid4().hex[:6]}", ["predict"])
        other = client_for(app, other_token)
        refused = other.post(f"{job_path}/cancel")
        assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "job_not_found"
        assert _rows_of(svc, [view["id"]])[view["id"]]["status"] == "queued", "nothing changed"
        assert client.post(f"/v1/predictions/{uuid.uuid4()}/cancel").status_code == 404
        assert client.post("/v1/predictions/not-an-id/cancel").status_code == 404

        cancelled = client.post(f"{job_path}/cancel")

        assert cancelled.status_code == 200
        body = cancelled.get_json()
        assert body["status"] == "cancelled" and body["done"] is True
        assert body["error"]["code"] == "cancelled" and body["outputs"] is None
        assert client.get(job_path).get_json()["status"] == "cancelled"
        again = client.post(f"{job_path}/cancel")
        assert again.status_code == 409
        assert again.get_json()["error"]["details"]["status"] == "cancelled"
        by_admin = _submit(client, counting)
        admin = client_for(app, tokens["admin"])
        assert admin.post(f"/v1/predictions/{by_admin['id']}/cancel").status_code == 200
    calls = dict(CALLS)
    drain(svc, counting, 1)
    assert CALLS == calls, "a cancelled job is never run"
    rows = _rows_of(svc, [view["id"], by_admin["id"]])
    assert {row["status"] for row in rows.values()} == {"cancelled"}


def test_a_finished_job_cannot_be_cancelled(client, svc, counting):
    with worker_stopped(svc, counting):
        view = _submit(client, counting)
    drain(svc, counting, 1)
    refused = client.post(f"/v1/predictions/{view['id']}/cancel")
    assert refused.status_code == 409
    assert refused.get_json()["error"] == {
        "code": "job_not_cancellable",
        "message": f"job {view['id']} is succeeded: only a queued job can be cancelled",
        "details": {"status": "succeeded"},
    }
    assert client.get(f"/v1/predictions/{view['id']}").get_json()["done"] is True


def test_a_cancel_mark_lost_leaves_the_job_cancelled_unrun(client, svc, counting):
    """The row is the record: with the item still queued and its mark gone, no worker runs it."""
    with worker_stopped(svc, counting):
        view = _submit(client, counting)
        assert client.post(f"/v1/predictions/{view['id']}/cancel").status_code == 200
        assert svc.redis.exists(CANCEL_PREFIX + view["id"])
        svc.redis.delete(CANCEL_PREFIX + view["id"])
        RowQueue(svc.redis, counting, 1).push(
            encode_item(view["id"], iris_rows(1).tolist(), n_rows=1, created_at=view["created_at"])
        )
    calls = dict(CALLS)
    drain(svc, counting, 1)
    assert CALLS == calls
    assert _rows_of(svc, [view["id"]])[view["id"]]["status"] == "cancelled"


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[Any]:
    """A Redis server of this test's own, which it may restart: ``restart()`` loses everything."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    stack = contextlib.ExitStack()

    def start() -> None:
        stack.enter_context(process_group(argv, {}, tmp_path / f"redis-{time.monotonic()}.log"))
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(port=port).ping()
                return
            except Exception:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def restart() -> None:
        stack.close()
        start()

    start()
    with stack:
        yield port, restart
    stack.close()


def test_a_cancelled_job_stays_cancelled_after_redis_restarts_and_the_sweeper_runs(
    svc, settings, counting, own_redis
):
    port, restart = own_redis
    own = dataclasses.replace(
        svc,
        redis=Redis(port=port),
        redis_wait=Redis(port=port, socket_timeout=40),
        settings=settings.replace(stuck_job_seconds=0),
    )
    with worker_stopped(own, counting):
        view = submit.submit(own, counting, iris_rows(1).tolist())
        assert view["status"] == "queued"
        cancelled = ending.cancel(own, view["id"], None)
    assert cancelled["status"] == "cancelled"

    restart()
    assert own.redis.dbsize() == 0, "Redis lost everything"
    expire_overdue_jobs(own)
    requeue_stuck_jobs(own)  # every stuck queued job of the database: not this one
    wake_workers(own)
    calls = dict(CALLS)
    drain(own, counting, 1)

    assert CALLS == calls, "never run"
    assert _rows_of(svc, [view["id"]])[view["id"]]["status"] == "cancelled"
    queued = [item for key in queue_keys(counting, 1) for item in own.redis.lrange(key, 0, -1)]
    assert not any(view["id"].encode() in item for item in queued)


# -- priorities ---------------------------------------------------------------------------


def _item(rows: int = 1, deadline: Any = None) -> tuple[str, bytes]:
    job_id = str(uuid.uuid4())
    item = encode_item(job_id, [[1.0, 2.0, 3.0, 4.0]] * rows, n_rows=rows, created_at=utcnow().isoformat(),
                       deadline=deadline)  # fmt: skip
    return job_id, item


def test_the_pop_drains_priorities_strictly_in_order(svc):
    name = f"order-{uuid.uuid4().hex[:6]}"
    high, normal, low = (RowQueue(svc.redis, name, 1, priority=p) for p in ("high", "normal", "low"))
    low_id, low_item = _item()
    normal_id, normal_item = _item()
    high_id, high_item = _item()
    low.push(low_item)
    normal.push(normal_item)
    high.push(high_item)

    items, left = high.pop_batch(10)
    assert [item.job_id for item in items] == [high_id], "a batch holding high rows takes no lower ones"
    assert left == 2
    items, left = high.pop_batch(10)
    assert [item.job_id for item in items] == [normal_id, low_id], "normal and low mix, normal first"
    assert left == 0

    big = [_item(3) for _ in range(2)]
    for _, item in big:
        normal.push(item)
    small_low_id, small_low = _item(1)
    low.push(small_low)
    first, left = high.pop_batch(4)
    assert [item.job_id for item in first] == [big[0][0]], "no low row while a normal item waits"
    assert left == 2
    second, left = high.pop_batch(4)
    assert [item.job_id for item in second] == [big[1][0], small_low_id] and left == 0

    # The wait's item goes back first: a blocking pop takes the highest priority too.
    low_id, low_item = _item()
    high_id, high_item = _item()
    low.push(low_item)
    high.push(high_item)
    taken = high.wait_for_item(1)
    assert taken is not None and taken[0] == high.key
    items, _ = high.pop_batch(10, put_back=taken)
    assert [item.job_id for item in items] == [high_id]
    assert [item.job_id for item in high.pop_batch(10)[0]] == [low_id]
    svc.redis.delete(*high.keys, high.active)


def test_the_pop_drops_cancelled_items_and_sets_aside_expired_ones(svc):
    queue = RowQueue(svc.redis, f"marks-{uuid.uuid4().hex[:6]}", 1)
    cancelled_id, cancelled = _item()
    expired_id, expired = _item(deadline=utcnow() - timedelta(seconds=1))
    kept_id, kept = _item(deadline=utcnow() + timedelta(hours=1))
    for item in (cancelled, expired, kept):
        queue.push(item)
    svc.redis.set(CANCEL_PREFIX + cancelled_id, b"1", ex=60)

    items, left = queue.pop_batch(10)

    assert [item.job_id for item in items] == [kept_id] and left == 0
    assert [item.job_id for item in queue.expired] == [expired_id]
    svc.redis.delete(*queue.keys, queue.active, CANCEL_PREFIX + cancelled_id)


def test_a_key_may_be_refused_high_priority_and_has_a_default(app, svc, counting):
    _, token = svc.keys.create(f"capped-{uuid.uuid4().hex[:6]}", ["predict"], default_priority="low",
                               max_priority="normal")  # fmt: skip
    capped = client_for(app, token)
    before = count_jobs(svc)
    refused = capped.post(f"/v1/models/{counting}/predictions",
                          json={"inputs": iris_rows(1).tolist(), "priority": "high"})  # fmt: skip
    assert refused.status_code == 403
    assert refused.get_json()["error"]["details"] == {"priority": "high", "max_priority": "normal"}
    assert count_jobs(svc) == before, "nothing stored"
    with worker_stopped(svc, counting):
        default = _submit(capped, counting)
        normal = _submit(capped, counting, priority="normal")
        assert svc.redis.llen(queue_keys(counting, 1)[2]) >= 1, "the default went to the low queue"
        samples = scrape_test_client(capped)
        age = ("predq_oldest_queued_job_by_priority_age_seconds",
               frozenset({"model": counting, "version": "1", "priority": "low"}.items()))  # fmt: skip
        assert samples[age] >= 0
    assert default["priority"] == "low" and normal["priority"] == "normal"
    ending.end_unrun(svc, ending.JobStatus.CANCELLED, [uuid.UUID(default["id"]), uuid.UUID(normal["id"])])


@pytest.mark.parametrize(
    "body",
    [
        {"priority": "urgent"},
        {"priority": 1},
        {"priority": None},
        {"deadline_ms": 0},
        {"deadline_ms": -5},
        {"deadline_ms": 86_400_001},
        {"deadline_ms": 1.5},
        {"deadline_ms": "50"},
    ],
)
def test_a_priority_or_deadline_out_of_range_is_refused_and_nothing_stored(client, svc, counting, body):
    before = count_jobs(svc)
    response = client.post(
        f"/v1/models/{counting}/predictions", json={"inputs": iris_rows(1).tolist(), **body}
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input" and set(error["details"]["fields"]) == set(body)
    assert count_jobs(svc) == before


# -- the Python client ----------------------------------------------------------------------


def test_the_client_cancels_reads_done_and_raises_job_cancelled(api_server, tokens, svc, counting, capsys):
    import asyncio

    import predq

    with predq.Client(api_server, tokens["predict"], timeout=10) as client, worker_stopped(svc, counting):
        job = client.submit(counting, iris_rows(1).tolist(), priority="low", deadline_ms=60_000)
        assert job.done is False and job.view["priority"] == "low"
        assert job.cancel() is job and job.done and job.view["status"] == "cancelled"
        with pytest.raises(predq.JobCancelled) as raised:
            job.result(timeout=2)
        assert raised.value.code == "cancelled"
        with pytest.raises(predq.Conflict):
            client.cancel(job.id)
        other = client.submit(counting, iris_rows(1).tolist())
        assert client.cancel(other.id).view["status"] == "cancelled"

        async def cancel_async() -> str:
            async with predq.AsyncClient(api_server, tokens["predict"], timeout=10) as aclient:
                queued = await aclient.submit(counting, iris_rows(1).tolist())
                return (await queued.cancel()).view["status"]

        assert asyncio.run(cancel_async()) == "cancelled"
        from predq.cli import main as predq_command

        third = client.submit(counting, iris_rows(1).tolist())
    command = ["--url", api_server, "--api-key", tokens["predict"], "cancel", third.id]
    assert predq_command(command) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert predq_command(command) == 1 and "job_not_cancellable" in capsys.readouterr().err


def test_predict_sends_what_is_left_of_its_deadline_so_a_job_no_one_waits_for_expires(
    api_server, tokens, svc, counting
):
    import predq

    submitted = utcnow()
    with predq.Client(api_server, tokens["predict"], timeout=1.5) as client, worker_stopped(svc, counting):
        with pytest.raises(predq.DeadlineExceeded):
            client.predict(counting, iris_rows(1).tolist(), wait=0.5)
    with svc.engine.connect() as conn:
        job = conn.execute(
            select(Job.id, Job.created_at, Job.deadline)
            .where(Job.model_name == counting, Job.created_at >= submitted)
            .order_by(Job.created_at.desc())
        ).first()
    assert job is not None and job.deadline is not None
    assert 0 < (job.deadline - job.created_at).total_seconds() <= 1.5
    time.sleep(max(0.0, (job.deadline - utcnow()).total_seconds()) + 0.05)
    calls = dict(CALLS)
    drain(svc, counting, 1)
    assert CALLS == calls
    assert _rows_of(svc, [str(job.id)])[str(job.id)]["status"] == "expired"


def test_an_arrow_request_steers_its_job_from_the_query_string(client, svc, counting):
    from tests.helpers import arrow_body, arrow_table

    path = f"/v1/models/{counting}/predictions"
    body = arrow_body(arrow_table(iris_rows(2)))
    headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
    before = count_jobs(svc)
    refused = client.post(f"{path}?priority=urgent", data=body, headers=headers)
    assert refused.status_code == 422 and "priority" in refused.get_json()["error"]["details"]["fields"]
    assert client.post(f"{path}?deadline_ms=0", data=body, headers=headers).status_code == 422
    assert count_jobs(svc) == before
    with worker_stopped(svc, counting):
        accepted = client.post(f"{path}?priority=low&deadline_ms=60000", data=body, headers=headers)
    assert accepted.status_code == 202
    view = accepted.get_json()
    assert view["priority"] == "low" and 59_900 <= _deadline_ms(view) <= 60_100
    ending.end_unrun(svc, ending.JobStatus.CANCELLED, [uuid.UUID(view["id"])])


def test_keys_are_created_with_a_default_priority_and_a_ceiling_from_the_cli(app, svc, counting):
    runner = app.test_cli_runner()
    name = f"low-cli-{uuid.uuid4().hex[:6]}"
    created = runner.invoke(
        args=["keys", "create", name, "--default-priority", "low", "--max-priority", "low"]
    )
    assert created.exit_code == 0, created.output
    capped = client_for(app, created.stdout.strip().splitlines()[-1])
    assert runner.invoke(args=["keys", "create", "bad-prio", "--max-priority", "urgent"]).exit_code != 0
    with worker_stopped(svc, counting):
        view = _submit(capped, counting)
        refused = capped.post(f"/v1/models/{counting}/predictions",
                              json={"inputs": iris_rows(1).tolist(), "priority": "normal"})  # fmt: skip
    assert view["priority"] == "low" and refused.status_code == 403
    ending.end_unrun(svc, ending.JobStatus.CANCELLED, [uuid.UUID(view["id"])])


def test_a_deferred_job_cancelled_while_its_batch_runs_is_not_answered_twice(client, svc, counting):
    """The worker popped the waiting submit's rows before the cancel (its mark too late): the
    row says cancelled, so the worker's result is neither stored nor handed to pollers."""
    import threading

    answers: list[Any] = []
    with worker_stopped(svc, counting):
        thread = threading.Thread(target=lambda: answers.append(client.post(
            f"/v1/models/{counting}/predictions?wait=0.3", json={"inputs": iris_rows(1).tolist()})))  # fmt: skip
        thread.start()
        thread.join(10)
        assert answers and answers[0].status_code == 202, "the wait ran out: the API stored the job"
        job_id = answers[0].get_json()["id"]
        assert client.post(f"/v1/predictions/{job_id}/cancel").status_code == 200
        svc.redis.delete(CANCEL_PREFIX + job_id)  # as if the worker had popped the rows first
    drain(svc, counting, 1)

    assert client.get(f"/v1/predictions/{job_id}").get_json()["status"] == "cancelled"
    assert _rows_of(svc, [job_id])[job_id]["status"] == "cancelled"


def test_a_celery_worker_started_after_200_jobs_past_their_deadline_runs_none(
    app, client, svc, settings, tmp_path
):
    """The deadline target with a real worker process (the production command) of its own: the
    model's pool sends its batches to that worker alone; the model counts its calls in a file."""
    import socket

    from app.predictions.queue import wake_worker
    from app.processes import PROCESSES
    from tests.helpers import bin_path, celery_worker, settings_env
    from tests.slow_model import CALLS_FILE_VARIABLE

    x, y = load_iris(return_X_y=True)
    model = make_pipeline(FunctionTransformer(counting_identity), RandomForestClassifier(n_estimators=5)).fit(
        x, y
    )
    joblib.dump(model, tmp_path / "counting.joblib")
    name, pool = f"counted-{uuid.uuid4().hex[:6]}", f"steer{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, tmp_path / "counting.joblib")
    svc.registry.set_pool(name, pool)
    calls_file = tmp_path / "calls.txt"
    calls_file.write_text("")
    with worker_stopped(svc, name):
        views = [_submit(client, name, deadline_ms=50) for _ in range(200)]
    node = f"steer-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [bin_path("celery"), *PROCESSES["worker"][1:5], "-Q", f"inference.{pool}", "-c", "1", "-n", node]
    env = settings_env(settings) | {CALLS_FILE_VARIABLE: str(calls_file)}
    with celery_worker(app, argv, env, node, tmp_path / "worker.log"):
        wake_worker(svc, name, 1)
        deadline = time.monotonic() + 60
        while any(row["status"] == "queued" for row in _rows_of(svc, [v["id"] for v in views]).values()):
            assert time.monotonic() < deadline, "the worker did not end the jobs"
            time.sleep(0.2)
        probe = client.post(f"/v1/models/{name}/predictions?wait=20", json={"inputs": iris_rows(1).tolist()})
    assert probe.status_code == 200 and probe.get_json()["status"] == "succeeded", "the worker runs live jobs"

    rows = _rows_of(svc, [view["id"] for view in views])
    assert len(rows) == 200 and {row["status"] for row in rows.values()} == {"expired"}, "none lost"
    calls = [int(n) for n in calls_file.read_text().split()]
    # predict and predict_proba, each on the live probe's one row: never on the 200.
    assert calls and len(calls) <= 2 and set(calls) == {1}, calls
