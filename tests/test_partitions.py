"""PostgreSQL's jobs and batches partitioned by day (issue 31): a poll reads one partition, an
insert never fails for want of one, the sweeper makes days ahead and drops whole days past
retention without deleting a job that must stay, and the migration converts a database in place.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import uuid_utils
from alembic import command
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, event, insert, select, text

from app import create_app
from app.db import IdempotencyKey, Job, ShadowOutput, utcnow
from app.db.ids import by_id, new_id, time_of
from app.db.partitions import create_day, day_name, day_of, partitions
from app.lifecycle import shadows
from app.migrate import alembic_config, upgrade
from app.predictions.idempotency import owned_key, request_hash_of
from scripts.local import scratch_database
from tests.helpers import ADMIN_URL
from workers.partitions import drop_past, maintain, stragglers
from workers.retention import expire_all, expire_jobs

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def own(settings: Any, artifacts: dict[str, Any]) -> Iterator[Any]:
    """An app on a database of its own (its partitions are changed here), auth off, iris v1."""
    with scratch_database(ADMIN_URL, "predq_part") as url:
        upgrade(url)
        app = create_app(settings.replace(database_url=url, auth_enabled=False))
        app.extensions["predq"].registry.register("iris", artifacts["iris"])
        yield app
        app.extensions["predq"].engine.dispose()


def _where(svc: Any, job_id: uuid.UUID) -> str:
    """The partition the job's row is stored in."""
    with svc.engine.connect() as conn:
        return str(
            conn.execute(text("SELECT tableoid::regclass FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
        )


def _counted(metric: str) -> float:
    return REGISTRY.get_sample_value(metric, {"table": "jobs"}) or 0.0


def _job(
    job_id: uuid.UUID, created_at: Any, status: str = "succeeded", completed_at: Any = None
) -> dict[str, Any]:
    return {"id": job_id, "model_name": "iris", "model_version": 1, "status": status, "n_rows": 1,
            "inputs": [ROW], "outputs": [{"prediction": 0}] if status == "succeeded" else None, "cached_rows": 0,
            "created_at": created_at, "completed_at": completed_at}  # fmt: skip


def test_a_job_polled_by_id_reads_the_one_partition_its_id_names(own):
    svc = own.extensions["predq"]
    response = own.test_client().post("/v1/models/iris/predictions", json={"inputs": [ROW]})
    job_id = uuid.UUID(response.json["id"])
    query = select(Job.__table__).where(by_id(Job, job_id))

    with svc.engine.connect() as conn:
        stored = conn.execute(query).mappings().one()
        plan = "\n".join(
            conn.execute(
                text(f"EXPLAIN {query.compile(conn, compile_kwargs={'literal_binds': True})}")
            ).scalars()
        )

    assert response.status_code in (200, 202), response.json
    assert job_id.version == 7 and stored["created_at"] == time_of(job_id), (
        "created_at is the id's time, exactly"
    )
    scanned = set(re.findall(r"\bon (jobs\w*)", plan))  # the relations read ("Index Scan using i on t")
    assert scanned == {day_name("jobs", day_of(stored["created_at"]))}, plan


def test_an_insert_with_no_partition_for_its_day_goes_to_the_default_and_succeeds(own):
    svc = own.extensions["predq"]
    today = day_name("jobs", day_of(utcnow()))
    with svc.engine.begin() as conn:  # the sweeper was down: today's partition was never made
        conn.execute(text(f"ALTER TABLE jobs DETACH PARTITION {today}"))
    try:
        response = own.test_client().post(
            "/v1/models/iris/predictions", json={"inputs": [[6.1, 2.8, 4.7, 1.2]]}
        )
        assert response.status_code in (200, 202), response.json
        assert _where(svc, uuid.UUID(response.json["id"])) == "jobs_default"
        assert own.test_client().get(f"/v1/predictions/{response.json['id']}").status_code == 200
    finally:
        with svc.engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {today}"))
    assert maintain(svc)["partitions_created"] >= 1, "the days after today are made"
    with svc.engine.connect() as conn:
        names = {part.name for part in partitions(conn, "jobs")}
    assert today not in names, "today stays in the default partition, which holds rows of it"


def test_the_sweeper_makes_days_ahead_and_drops_a_day_past_retention_leaving_newer_days(own):
    svc = own.extensions["predq"]
    old, newer = day_of(utcnow()) - timedelta(days=10), day_of(utcnow()) - timedelta(days=9)
    finished = [uuid.uuid4() for _ in range(3)]
    kept = uuid.uuid4()
    with svc.engine.begin() as conn:
        for day in (old, newer):
            create_day(conn, "jobs", day)
        conn.execute(insert(Job), [_job(job_id, old + timedelta(hours=1), completed_at=old + timedelta(hours=1))
                                   for job_id in finished])  # fmt: skip
        conn.execute(
            insert(Job), _job(kept, newer + timedelta(hours=1), completed_at=newer + timedelta(hours=1))
        )
    dropped_before = _counted("predq_partitions_dropped_total")
    nine_days = dataclasses.replace(svc, settings=svc.settings.replace(job_retention_seconds=9 * 86400))

    done = maintain(nine_days)

    with svc.engine.connect() as conn:
        names = {part.name for part in partitions(conn, "jobs")}
        left = set(conn.execute(select(Job.id).where(Job.id.in_([*finished, kept]))).scalars())
    assert day_name("jobs", old) not in names and day_name("jobs", newer) in names
    assert left == {kept}, "the old day went whole; the newer day's job stays"
    assert (
        done["partitions_dropped"] == 1 and _counted("predq_partitions_dropped_total") == dropped_before + 1
    )
    ahead = [
        day_name("jobs", day_of(utcnow()) + timedelta(days=n))
        for n in range(1, svc.settings.partition_days_ahead + 1)
    ]
    assert set(ahead) <= names, "the next PARTITION_DAYS_AHEAD days have partitions"


def test_a_queued_job_in_a_day_past_retention_is_moved_to_the_default_never_deleted(own):
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=20)
    queued, late, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", old)
        conn.execute(insert(Job), [
            _job(queued, old + timedelta(hours=2), status="queued"),
            # Finished only an hour ago: within its retention, however old its day.
            _job(late, old + timedelta(hours=3), completed_at=utcnow() - timedelta(hours=1)),
            _job(gone, old + timedelta(hours=4), completed_at=old + timedelta(hours=4)),
        ])  # fmt: skip
    moved_before = _counted("predq_partition_stragglers_moved_total")
    week = dataclasses.replace(svc, settings=svc.settings.replace(job_retention_seconds=7 * 86400))

    done = maintain(week)

    assert (
        done["stragglers_moved"] == 2
        and _counted("predq_partition_stragglers_moved_total") == moved_before + 2
    )
    assert _where(svc, queued) == "jobs_default" and _where(svc, late) == "jobs_default"
    with svc.engine.connect() as conn:
        assert conn.execute(select(Job.id).where(Job.id == gone)).first() is None, "its day was dropped"
    assert own.test_client().get(f"/v1/predictions/{queued}").json["status"] == "queued"


def _wait_for_lock_waiter(svc: Any, seconds: float = 5.0) -> bool:
    """Whether some backend is waiting for a lock (the drop, behind a writer), within ``seconds``."""
    deadline = time.monotonic() + seconds
    with svc.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND datname = current_database()")
            ).scalar()  # fmt: skip
            conn.rollback()
            if waiting:
                return True
            time.sleep(0.005)
    return False


def test_a_job_written_into_a_day_while_its_drop_waits_for_the_lock_is_kept(own):
    """A deferred job's row is written when its worker finishes: it may land in a day due to
    go at any moment, after the drop looked for stragglers, before it detached the day."""
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=40)
    late = uuid.uuid4()
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", old)
    writer = svc.engine.connect()
    writer.begin()
    writer.execute(insert(Job), _job(late, old + timedelta(hours=5), status="queued"))
    done: dict[str, Any] = {}
    sweep = threading.Thread(
        target=lambda: done.update(result=drop_past(svc.engine, "jobs", utcnow() - timedelta(days=7)))
    )

    sweep.start()
    waited = _wait_for_lock_waiter(svc)
    writer.commit()  # the row lands while the drop waits for its lock
    writer.close()
    sweep.join(30)

    assert waited, "the drop waited for the writer's lock"
    assert done["result"][0] >= 1, "the day was dropped"
    assert _where(svc, late) == "jobs_default", "the job written meanwhile was moved, not dropped"


def test_a_day_waits_while_an_idempotency_key_older_than_its_end_is_stored(own):
    """Else a replay of that key would find its key taken by a job that is gone."""
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=30)
    keyed = uuid.uuid4()
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", old)
        conn.execute(
            insert(Job), _job(keyed, old + timedelta(hours=1), completed_at=old + timedelta(hours=1))
        )
        conn.execute(
            insert(IdempotencyKey),
            {"key": "old-key", "job_id": keyed, "created_at": old + timedelta(hours=1)},
        )
    week = dataclasses.replace(svc, settings=svc.settings.replace(job_retention_seconds=7 * 86400))
    waits_before = _counted("predq_partition_drop_waits_total")

    waited = maintain(week)
    expired = expire_all(week)
    dropped = maintain(week)

    assert (
        waited["partitions_dropped"] == 0 and _counted("predq_partition_drop_waits_total") == waits_before + 1
    )
    assert expired["idempotency_keys"] == 1, "retention deletes the keys first"
    assert dropped["partitions_dropped"] == 1, "then the day goes"


def _fill_day(svc: Any, day: Any, rows: int, queued_every: int) -> None:
    """A partition for ``day`` holding ``rows`` jobs: every ``queued_every``-th still queued,
    the others finished within the day."""
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", day)
        conn.execute(
            text(f"INSERT INTO {day_name('jobs', day)} (id, model_name, model_version, status, n_rows, "
                 "inputs, cached_rows, created_at, completed_at, priority) SELECT gen_random_uuid(), 'iris', 1, "
                 "CASE WHEN n % :every = 0 THEN 'queued' ELSE 'succeeded' END, 1, '[[1]]', 0, "
                 ":t + n * interval '1 millisecond', CASE WHEN n % :every = 0 THEN NULL "
                 "ELSE :t + n * interval '1 millisecond' END, 'normal' FROM generate_series(1, :rows) n"),
            {"t": day + timedelta(hours=1), "every": queued_every, "rows": rows},
        )  # fmt: skip


def test_a_day_with_more_stragglers_than_bind_parameters_allows_is_dropped_and_keeps_them_all(own):
    """PostgreSQL takes at most 65,535 bind parameters in a statement: stragglers are not
    listed one parameter each."""
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=70)
    _fill_day(svc, old, 70_000, queued_every=1)

    dropped, moved = drop_past(svc.engine, "jobs", utcnow() - timedelta(days=7))

    with svc.engine.begin() as conn:
        kept = conn.execute(text("DELETE FROM jobs_default WHERE created_at < :end"),
                            {"end": old + timedelta(days=1)}).rowcount  # fmt: skip
    assert dropped >= 1 and moved >= 70_000, (dropped, moved)
    assert kept == 70_000, "every queued job of the day was moved to the default"


def test_a_days_stragglers_are_found_by_its_indexes_not_by_reading_the_whole_day(own):
    """They are read under DETACH's lock, while every query on jobs waits: a scan of a busy
    day there would stall the service for as long as it took."""
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=90)
    _fill_day(svc, old, 50_000, queued_every=25_000)
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {day_name('jobs', old)}"))  # as autovacuum has, days later
        cutoff = utcnow() - timedelta(days=7)
        plan = "\n".join(
            conn.execute(text(f"EXPLAIN {stragglers(day_name('jobs', old))}"), {"cutoff": cutoff}).scalars()
        )
        found = conn.execute(text(stragglers(day_name("jobs", old))), {"cutoff": cutoff}).all()
        conn.execute(text(f"DROP TABLE {day_name('jobs', old)}"))  # its queued jobs are no other test's
    assert "Seq Scan" not in plan, plan
    assert len(found) == 2, "the two queued jobs, and no finished one"


def test_a_read_of_jobs_queued_behind_a_waiting_drop_waits_a_moment_not_the_whole_wait(own):
    """A DETACH waiting for its lock queues every query on jobs behind it: it waits a short
    lock_timeout, lets them through, and tries again."""
    svc = own.extensions["predq"]
    old = day_of(utcnow()) - timedelta(days=80)
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", old)
    writer = svc.engine.connect()
    writer.begin()
    writer.execute(insert(Job), _job(uuid.uuid4(), utcnow(), status="queued"))  # a long transaction
    done: dict[str, Any] = {}
    sweep = threading.Thread(
        target=lambda: done.update(result=drop_past(svc.engine, "jobs", utcnow() - timedelta(days=7)))
    )

    sweep.start()
    waited = _wait_for_lock_waiter(svc)
    started = time.monotonic()
    with svc.engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM jobs WHERE created_at > now()")).scalar()
    read_seconds = time.monotonic() - started
    sweep.join(30)
    writer.rollback()
    writer.close()

    assert waited, "the drop waited behind the writer"
    assert read_seconds < 1.0, f"the read waited {read_seconds:.2f} s behind the drop"
    assert done["result"] == (0, 0), "the day waits for the next sweep"
    with svc.engine.connect() as conn:
        assert day_name("jobs", old) in {part.name for part in partitions(conn, "jobs")}


def test_a_day_is_made_ahead_while_a_transaction_writing_jobs_is_open(own):
    """Making a day ahead does not take the parent's exclusive lock: submits and polls go on
    (a write into a day that has its partition; one into the default partition would block it)."""
    svc = own.extensions["predq"]
    tomorrow = day_of(utcnow()) + timedelta(days=1)
    ahead = day_of(utcnow()) + timedelta(days=svc.settings.partition_days_ahead)
    with svc.engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {day_name('jobs', ahead)}"))
        if day_name("jobs", tomorrow) not in {part.name for part in partitions(conn, "jobs")}:
            create_day(conn, "jobs", tomorrow)
    writer = svc.engine.connect()
    writer.begin()
    writer.execute(insert(Job), _job(uuid.uuid4(), tomorrow + timedelta(hours=1), status="queued"))
    try:
        done = maintain(dataclasses.replace(svc, settings=svc.settings.replace(job_retention_seconds=0)))
    finally:
        writer.rollback()
        writer.close()
    count = text("SELECT count(*) FROM pg_indexes WHERE tablename = :t")
    with svc.engine.connect() as conn:
        indexes = conn.execute(count, {"t": day_name("jobs", ahead)}).scalar()
        expected = conn.execute(count, {"t": day_name("jobs", tomorrow)}).scalar()
        names = {part.name for part in partitions(conn, "jobs")}

    assert day_name("jobs", ahead) in names, f"the day ahead was made while the writer waited: {done}"
    assert indexes == expected, "the attached day has the indexes every day has"


def test_making_a_day_that_exists_already_changes_nothing(own):
    svc = own.extensions["predq"]
    today = day_of(utcnow()) + timedelta(days=1)
    with svc.engine.begin() as conn:
        create_day(conn, "jobs", today)
        before = partitions(conn, "jobs")
        create_day(conn, "jobs", today)
        after = partitions(conn, "jobs")
    assert sorted(before, key=str) == sorted(after, key=str)


def _keyed_job(svc: Any, key: str, created_at: Any, **fields: Any) -> uuid.UUID:
    """A job stored with its Idempotency-Key (``key``, auth off), as a submit of [ROW] stores it."""
    job_id = uuid.uuid4()
    with svc.engine.begin() as conn:
        conn.execute(insert(Job), {**_job(job_id, created_at, **fields),
                                   "request_hash": request_hash_of("iris", None, None, None, [ROW])})  # fmt: skip
        conn.execute(insert(IdempotencyKey), {"key": key, "job_id": job_id, "created_at": created_at})
    return job_id


def test_an_idempotency_key_of_a_job_still_queued_outlives_the_retention_so_a_retry_finds_it(own):
    svc = own.extensions["predq"]
    queued = _keyed_job(svc, "still-queued", utcnow() - timedelta(days=50), status="queued")
    week = dataclasses.replace(svc, settings=svc.settings.replace(job_retention_seconds=7 * 86400))

    expire_all(week)
    maintain(week)
    retried = own.test_client().post(
        "/v1/models/iris/predictions", json={"inputs": [ROW]}, headers={"Idempotency-Key": "still-queued"}
    )

    assert retried.status_code in (200, 202) and retried.json["id"] == str(queued), (
        "the retry replays the queued job instead of making a second one"
    )


def test_a_finished_job_whose_key_is_still_stored_is_not_deleted_before_its_key(own):
    """A sweep whose budget ran out while deleting keys must not delete their jobs: a replay
    would find the key taken and no job."""
    svc = own.extensions["predq"]
    old = utcnow() - timedelta(days=60)
    keyed = _keyed_job(svc, "budget-ran-out", old, completed_at=old)

    expire_jobs(svc.engine, utcnow() - timedelta(days=7), deadline=time.monotonic() + 10)

    with svc.engine.connect() as conn:
        left = conn.execute(select(Job.id).where(Job.id == keyed)).first()
    assert left is not None, "the job waits until its key has gone"


def _id_at(moment: Any) -> uuid.UUID:
    """A UUIDv7 naming ``moment`` (to the millisecond), as a job stored then would have."""
    return uuid.UUID(int=uuid_utils.uuid7(nanoseconds=int(moment.timestamp() * 1000) * 1_000_000).int)


def _shadowed(svc: Any, model: str, jobs: list[tuple[uuid.UUID, Any, int]]) -> None:
    """Succeeded jobs of ``model`` (id, created_at, the served prediction), each with a shadow
    output of version 2 that predicted 0, stored in this order."""
    with svc.engine.begin() as conn:
        for job_id, created_at, prediction in jobs:
            conn.execute(insert(Job), {**_job(job_id, created_at, completed_at=created_at), "model_name": model,
                                       "outputs": [{"prediction": prediction}]})  # fmt: skip
            conn.execute(insert(ShadowOutput), {"job_id": job_id, "model_name": model, "model_version": 2,
                                                "outputs": [{"prediction": 0}], "batch_id": uuid.uuid4()})  # fmt: skip


def test_the_shadow_comparison_reads_only_the_partitions_of_the_jobs_it_compares(own, artifacts):
    svc = own.extensions["predq"]
    svc.registry.register("shadowed", artifacts["iris"])
    days = [day_of(utcnow()) - timedelta(days=n) for n in (2, 3, 4)]
    with svc.engine.begin() as conn:
        for day in days:
            create_day(conn, "jobs", day)
    first, second, other = (_id_at(day + timedelta(hours=5)) for day in days)
    _shadowed(svc, "shadowed", [(first, time_of(first), 0), (second, time_of(second), 1)])
    with svc.engine.begin() as conn:  # a job of another day, not shadowed: its partition is not read
        conn.execute(insert(Job), _job(other, time_of(other), completed_at=time_of(other)))
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(svc.engine, "before_cursor_execute", record)
    try:
        compared = shadows.shadow_comparisons(svc.engine, svc.registry, "shadowed")
    finally:
        event.remove(svc.engine, "before_cursor_execute", record)
    with svc.engine.connect() as conn:
        plans = ["\n".join(conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())
                 for statement, parameters in statements if re.search(r"\bjobs\b", statement)]  # fmt: skip

    assert [pair["job_id"] for pair in compared["jobs"]] == [str(second), str(first)], "newest first"
    assert compared["rows_compared"] == 2 and compared["prediction_agreement"] == 0.5
    assert len(plans) == 1, statements
    scanned = set(re.findall(r"\bon (jobs\w*)", plans[0]))
    assert (
        scanned == {_where(svc, first), _where(svc, second)} == {day_name("jobs", day) for day in days[:2]}
    ), plans[0]


def test_a_shadow_output_of_a_job_stored_before_uuidv7_ids_is_still_compared(own, artifacts):
    svc = own.extensions["predq"]
    svc.registry.register("shadowed_legacy", artifacts["iris"])
    legacy, timed = uuid.uuid4(), new_id()[0]
    two_days_ago = utcnow() - timedelta(days=2)  # a uuid4 names no time: any created_at is its own

    _shadowed(svc, "shadowed_legacy", [(legacy, two_days_ago, 0), (timed, time_of(timed), 0)])
    compared = shadows.shadow_comparisons(svc.engine, svc.registry, "shadowed_legacy")

    assert [pair["job_id"] for pair in compared["jobs"]] == [str(timed), str(legacy)]
    assert compared["rows_compared"] == 2 and compared["prediction_agreement"] == 1.0


def test_the_migration_converts_a_database_with_rows_in_place(settings, artifacts):
    with scratch_database(ADMIN_URL, "predq_convert") as url:
        upgrade(url, "0020")
        engine = create_engine(url)
        batch, job, keyed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        now = utcnow()
        request_hash = request_hash_of("iris", None, None, None, [ROW])
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO batches VALUES (:id, 'iris', 1, 2, 2, 'w', 'succeeded', 0.01, :t, :t)"),
                {"id": batch, "t": now - timedelta(days=2)},
            )
            for job_id, key in ((job, None), (keyed, owned_key("replay-me", None))):
                conn.execute(
                    text("INSERT INTO jobs (id, model_name, model_version, status, n_rows, inputs, outputs, "
                         "idempotency_key, request_hash, batch_id, cached_rows, created_at, completed_at, priority) "
                         "VALUES (:id, 'iris', 1, 'succeeded', 1, :inputs, :outputs, :key, :hash, :batch, 0, :t, :t, "
                         "'normal')"),
                    {"id": job_id, "inputs": f"[{ROW}]", "outputs": '[{"prediction": 0}]', "key": key,
                     "hash": request_hash, "batch": batch, "t": now - timedelta(days=2)},
                )  # fmt: skip
        engine.dispose()

        upgrade(url)

        command.check(alembic_config(url))  # the converted schema is the models'
        app = create_app(settings.replace(database_url=url, auth_enabled=False))
        app.extensions["predq"].registry.register("iris", artifacts["iris"])
        http = app.test_client()
        polled = http.get(f"/v1/predictions/{job}")
        replayed = http.post(
            "/v1/models/iris/predictions", json={"inputs": [ROW]}, headers={"Idempotency-Key": "replay-me"}
        )
        fresh = http.post("/v1/models/iris/predictions", json={"inputs": [ROW]})
        svc = app.extensions["predq"]
        with svc.engine.connect() as conn:
            names = {part.name for part in partitions(conn, "jobs")}
            batch_times = conn.execute(
                text("SELECT created_at FROM batches WHERE id = :id"), {"id": batch}
            ).all()
        where_old, where_new = _where(svc, job), _where(svc, uuid.UUID(fresh.json["id"]))
        svc.engine.dispose()

    assert polled.status_code == 200 and polled.json["status"] == "succeeded"
    assert replayed.status_code == 200 and replayed.json["id"] == str(keyed), "the key moved with its job"
    assert where_old == "jobs_legacy" and {"jobs_legacy", "jobs_default"} <= names
    assert where_new == "jobs_legacy", (
        "the old table holds every time up to the end of the day it was converted"
    )
    assert [t for (t,) in batch_times] == [now - timedelta(days=2)], "a batch's created_at is its start"


def test_the_migration_downgrades_and_upgrades_again_with_its_rows(settings):
    with scratch_database(ADMIN_URL, "predq_down") as url:
        upgrade(url)
        engine = create_engine(url)
        job, batch = uuid.uuid4(), uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(insert(Job), {**_job(job, utcnow(), completed_at=utcnow()), "batch_id": batch})
            conn.execute(
                insert(IdempotencyKey), {"key": "down-and-up", "job_id": job, "created_at": utcnow()}
            )
        config = alembic_config(url)

        command.downgrade(config, "0020")
        with engine.connect() as conn:
            downgraded = conn.execute(
                text("SELECT idempotency_key FROM jobs WHERE id = :id"), {"id": job}
            ).all()
            constraints = set(conn.execute(text(
                "SELECT conname FROM pg_constraint WHERE conrelid IN ('jobs'::regclass, 'batches'::regclass)"
            )).scalars())  # fmt: skip
        command.upgrade(config, "head")
        command.check(config)
        with engine.connect() as conn:
            upgraded = conn.execute(select(Job.id).where(Job.id == job)).all()
        engine.dispose()

    assert downgraded == [("down-and-up",)], "the job and its key survive the downgrade"
    assert {"pk_jobs", "pk_batches", "fk_jobs_batch_id_batches", "uq_jobs_idempotency_key"} <= constraints
    assert upgraded == [(job,)], "upgraded again, the job is still there"
