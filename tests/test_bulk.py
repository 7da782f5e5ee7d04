"""Batch jobs: a whole file scored by bulk workers, checked at submit, followed, cancelled, swept;
scored while the file is still read, by bulk workers that hold the model before their first chunk."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from redis import Redis
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import select

from app import create_app
from app.batch_jobs import jobs
from app.db import BulkChunk, BulkJob
from app.errors import InvalidInput
from app.registry import held
from app.storage import ObjectStore
from tests.helpers import (
    IRIS_FEATURES,
    arrow_table,
    celery_worker,
    client_for,
    count_rows,
    iris_rows,
    scrape_test_client,
    settings_env,
    stored_estimator,
    worker_argv,
)
from tests.slow_model import MARKER, refuse_marked_rows
from workers import bulk as bulk_scoring

PARQUET = "application/vnd.apache.parquet"


def iris_table(rows: int, seed: int = 0, id_column: str | None = None) -> pa.Table:
    table = arrow_table(iris_rows(rows, seed, decimals=2))
    if id_column:
        table = table.add_column(0, id_column, pa.array([f"o-{i}" for i in range(rows)]))
    return table


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1500)  # row groups unlike the chunks
    return sink.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    return sink.getvalue()


def wait_until_finished(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/batch-jobs/{job_id}").json
        if job["status"] in ("succeeded", "partial", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"batch job {job_id} did not finish: {job}")


def result_table(client, job_id: str) -> pa.Table:
    response = client.get(f"/v1/batch-jobs/{job_id}/result")
    assert response.status_code == 200
    return pq.read_table(io.BytesIO(response.data))


def test_a_parquet_file_is_scored_end_to_end_like_predict_proba_in_process(
    client, svc, registered, bulk_worker
):
    table = iris_table(3500, id_column="order_id")

    response = client.post(
        "/v1/models/iris/batch-jobs?id_column=order_id", data=parquet_bytes(table), content_type=PARQUET
    )

    assert response.status_code == 202, response.json
    submitted = response.json
    assert response.headers["Location"] == f"/v1/batch-jobs/{submitted['id']}"
    assert submitted["rows"]["total"] == 3500 and submitted["chunks"]["total"] == 4
    done = wait_until_finished(client, submitted["id"])
    assert done["status"] == "succeeded", done
    assert done["rows"]["done"] == 3500 and done["chunks"]["succeeded"] == 4
    assert done["rows_per_second"] > 0 and done["eta_seconds"] is None

    result = result_table(client, submitted["id"])
    estimator = stored_estimator(svc, "iris")
    features = table.select(IRIS_FEATURES).to_pandas()
    expected_proba = estimator.predict_proba(features)
    assert result.column("order_id").to_pylist() == table.column("order_id").to_pylist(), "input order, once"
    assert result.column("prediction").to_pylist() == estimator.predict(features).tolist()
    for j, label in enumerate(estimator.classes_):
        assert np.array_equal(result.column(f"probability_{label}").to_numpy(), expected_proba[:, j])


def test_a_csv_upload_is_scored_into_csv_with_row_numbers(client, svc, registered, bulk_worker):
    table = iris_table(1200, seed=1, id_column=None)

    response = client.post(
        "/v1/models/iris/batch-jobs",
        data={"file": (io.BytesIO(csv_bytes(table)), "rows.csv"), "output_format": "csv"},
        content_type="multipart/form-data",
    )

    assert response.status_code == 202, response.json
    done = wait_until_finished(client, response.json["id"])
    assert done["status"] == "succeeded" and done["source"] == "rows.csv"
    downloaded = client.get(f"/v1/batch-jobs/{done['id']}/result")
    assert downloaded.mimetype == "text/csv"
    result = pa_csv.read_csv(io.BytesIO(downloaded.data))
    assert result.column("row").to_pylist() == list(range(1200))
    expected = stored_estimator(svc, "iris").predict(table.to_pandas()[IRIS_FEATURES])
    assert result.column("prediction").to_pylist() == expected.tolist()


def _bad_input_cases(tmp_path: Path) -> list[tuple[str, dict, int, str]]:
    good = iris_table(10, id_column=None)
    strings = good.set_column(1, IRIS_FEATURES[1], pa.array(["3.1"] * 5 + ["abc"] + ["3.0"] * 4))
    with_null = good.set_column(2, IRIS_FEATURES[2], pa.array([1.0] * 7 + [None] + [1.0] * 2))
    lines = csv_bytes(good).split(b"\n")
    lines[4] = lines[4].rsplit(b",", 1)[0] + b",oops"  # data row 3, the last column
    return [
        ("not a file type we read", {"data": b"{}", "content_type": "application/xml"}, 415,
         "not application/xml"),
        ("garbage sent as parquet", {"data": b"PAR1 not really", "content_type": PARQUET}, 422, "PARQUET"),
        ("a missing feature", {"data": parquet_bytes(good.drop_columns([IRIS_FEATURES[0]])), "content_type": PARQUET},
         422, "missing sepal length (cm)"),
        ("an extra column", {"data": parquet_bytes(good.append_column("color", pa.array([1.0] * 10))),
                             "content_type": PARQUET}, 422, "extra color"),
        ("a string column", {"data": parquet_bytes(strings), "content_type": PARQUET}, 422,
         "row 5: 'abc'"),
        ("a missing value", {"data": parquet_bytes(with_null), "content_type": PARQUET}, 422,
         "row 7, column 'petal length (cm)'"),
        ("a word in a csv", {"data": b"\n".join(lines), "content_type": "text/csv"}, 422,
         "row 3, column 'petal width (cm)': 'oops'"),
        ("an empty csv", {"data": b"", "content_type": "text/csv"}, 422, "no rows"),
        ("a header only", {"data": csv_bytes(good).split(b"\n")[0] + b"\n", "content_type": "text/csv"}, 422,
         "no rows"),
        ("an infinite value", {"data": parquet_bytes(good.set_column(0, IRIS_FEATURES[0], pa.array([np.inf] * 10))),
                               "content_type": PARQUET}, 422, "is not finite"),
        ("beyond float32 for a forest",
         {"data": parquet_bytes(good.set_column(0, IRIS_FEATURES[0], pa.array([1e300] * 10))),
          "content_type": PARQUET}, 422, "within"),
        ("an unknown option", {"data": parquet_bytes(good), "content_type": PARQUET, "query_string": "color=red"},
         422, "unknown options"),
        ("an id column that is not there",
         {"data": parquet_bytes(good), "content_type": PARQUET, "query_string": "id_column=nope"}, 422, "nope"),
        ("a server path with no root set", {"json": {"path": str(tmp_path / "x.parquet")}}, 403, "BATCH_INPUT_ROOT"),
    ]  # fmt: skip


def test_bad_input_gets_a_clear_error_and_stores_and_queues_nothing(
    client, svc, settings, registered, tmp_path
):
    jobs_before = count_rows(svc, BulkJob)
    dirs_before = set(Path(settings.batch_root).iterdir()) if Path(settings.batch_root).exists() else set()

    for label, request, status, words in _bad_input_cases(tmp_path):
        response = client.post("/v1/models/iris/batch-jobs", **request)
        assert response.status_code == status, (label, response.json)
        assert words in response.json["error"]["message"], (label, response.json)

    assert count_rows(svc, BulkJob) == jobs_before
    left = {p for p in Path(settings.batch_root).iterdir() if p.name != "uploads"} - dirs_before
    assert not left, "no job directory is left behind"
    assert not any((Path(settings.batch_root) / "uploads").iterdir()), "no upload is left behind"


def test_a_file_larger_than_the_limit_gets_413(settings, tokens, registered):
    small = client_for(create_app(settings.replace(batch_max_bytes=1000)), tokens["predict"])

    response = small.post(
        "/v1/models/iris/batch-jobs", data=csv_bytes(iris_table(200)), content_type="text/csv"
    )

    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"


def test_a_server_path_is_read_only_under_the_allowed_root(
    settings, tokens, registered, bulk_worker, tmp_path
):
    root = tmp_path / "inputs"
    root.mkdir()
    pq.write_table(iris_table(50, id_column="order_id"), root / "orders.parquet")
    (tmp_path / "secret.parquet").write_bytes(parquet_bytes(iris_table(5)))
    allowed = client_for(create_app(settings.replace(batch_input_root=str(root))), tokens["predict"])

    outside = allowed.post("/v1/models/iris/batch-jobs", json={"path": "../secret.parquet"})
    inside = allowed.post(
        "/v1/models/iris/batch-jobs", json={"path": "orders.parquet", "id_column": "order_id"}
    )

    assert outside.status_code == 403 and outside.json["error"]["code"] == "forbidden"
    assert inside.status_code == 202, inside.json
    assert wait_until_finished(allowed, inside.json["id"])["rows"]["done"] == 50


def test_another_key_cannot_see_a_batch_job(app, client, svc, registered, bulk_worker):
    other = client_for(app, svc.keys.create(f"bulk-other-{uuid.uuid4().hex[:6]}", ["predict"])[1])
    job = client.post(
        "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(20)), content_type=PARQUET
    ).json

    for response in (
        other.get(f"/v1/batch-jobs/{job['id']}"),
        other.get(f"/v1/batch-jobs/{job['id']}/result"),
        other.delete(f"/v1/batch-jobs/{job['id']}"),
    ):
        assert response.status_code == 404 and response.json["error"]["code"] == "batch_job_not_found"
    assert wait_until_finished(client, job["id"])["status"] == "succeeded"


@pytest.fixture
def unserved(settings, tokens):
    """An app whose bulk tasks go to an in-memory broker no worker reads: chunks stay queued."""
    app = create_app(settings.replace(broker_url="memory://"))
    return app, client_for(app, tokens["predict"])


def test_cancel_drops_queued_chunks_and_a_late_message_scores_nothing(unserved, svc, registered):
    app, client = unserved
    job = client.post(
        "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(2500)), content_type=PARQUET
    ).json
    assert job["chunks"]["queued"] == 3

    cancelled = client.delete(f"/v1/batch-jobs/{job['id']}")
    again = client.delete(f"/v1/batch-jobs/{job['id']}")
    late = bulk_scoring.score_chunk(svc, job["id"], 0)

    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert cancelled.json["chunks"]["cancelled"] == 3
    assert again.status_code == 409 and again.json["error"]["code"] == "batch_job_finished"
    assert late["status"] == "skipped"
    assert client.get(f"/v1/batch-jobs/{job['id']}/result").status_code == 404


def test_chunks_whose_messages_were_lost_are_sent_again_by_the_sweeper(
    unserved, client, svc, registered, bulk_worker
):
    """As after Redis was wiped: the chunks are in the database, their messages nowhere."""
    _, lost = unserved
    data = parquet_bytes(iris_table(2100, id_column="order_id"))
    job = lost.post("/v1/models/iris/batch-jobs?id_column=order_id", data=data, content_type=PARQUET).json
    time.sleep(0.1)

    swept = _with_settings(svc, stuck_job_seconds=0.05)
    assert bulk_scoring.requeue_stuck_chunks(swept) == 3
    done = wait_until_finished(client, job["id"])

    assert done["status"] == "succeeded" and done["rows"]["done"] == 2100
    assert result_table(client, job["id"]).column("order_id").to_pylist() == [f"o-{i}" for i in range(2100)]


def test_a_chunk_the_model_refuses_fails_alone_and_the_job_is_partial(
    client, svc, registered, bulk_worker, tmp_path
):
    iris = load_iris(as_frame=True)
    model = make_pipeline(FunctionTransformer(refuse_marked_rows), RandomForestClassifier(n_estimators=5))
    joblib.dump(model.fit(iris.data, iris.target), tmp_path / "picky.joblib")
    name = f"picky-{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, tmp_path / "picky.joblib")
    table = iris_table(2500, id_column="order_id")
    marked = table.column(IRIS_FEATURES[0]).to_numpy().copy()
    marked[1234] = MARKER  # in the second chunk
    table = table.set_column(1, IRIS_FEATURES[0], pa.array(marked))

    job = client.post(
        f"/v1/models/{name}/batch-jobs?id_column=order_id", data=parquet_bytes(table), content_type=PARQUET
    ).json
    done = wait_until_finished(client, job["id"])

    assert done["status"] == "partial", done
    assert done["chunks"]["failed"] == 1 and done["rows"]["done"] == 1500
    assert done["failed_chunks"][0]["index"] == 1 and done["failed_chunks"][0]["first_row"] == 1000
    assert "refuses rows holding the marker" in done["failed_chunks"][0]["error"]["message"]
    ids = result_table(client, job["id"]).column("order_id").to_pylist()
    assert ids == [f"o-{i}" for i in range(1000)] + [f"o-{i}" for i in range(2000, 2500)]


def _with_settings(svc, **changes):
    import dataclasses

    return dataclasses.replace(svc, settings=svc.settings.replace(**changes))


def test_chunk_rows_are_recorded_per_chunk(svc, unserved, registered):
    _, client = unserved
    job = client.post(
        "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(2345)), content_type=PARQUET
    ).json
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(BulkChunk.rows).where(BulkChunk.job_id == uuid.UUID(job["id"])).order_by(BulkChunk.index)
        ).scalars()
        assert list(rows) == [1000, 1000, 345]
    queued = scrape_test_client(client)[("predq_bulk_chunks_queued", frozenset({("model", "iris")}))]
    assert queued >= 3, "the scrape counts the chunks waiting, from the database"
    client.delete(f"/v1/batch-jobs/{job['id']}")


def test_the_bulk_worker_runs_niced_and_takes_the_chunks(client, registered, bulk_worker, worker):
    job = client.post(
        "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(1500)), content_type=PARQUET
    ).json
    assert wait_until_finished(client, job["id"])["status"] == "succeeded"

    bulk = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "bulk,explain" in (p.info["cmdline"] or []) and "-Q" in p.info["cmdline"]
    ]
    online = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "inference,maintenance,training" in (p.info["cmdline"] or [])
    ]

    ours = os.nice(0)
    assert bulk and all(p.nice() >= ours + 10 for p in bulk), "the bulk worker and its pool run niced"
    assert online and all(p.nice() == ours for p in online), "the online worker does not"
    assert "predq.score_chunk" in bulk_worker.read_text(), "the bulk worker took the chunks"


def test_the_cli_scores_a_file_and_writes_the_result(app, svc, registered, bulk_worker, tmp_path):
    source, output = tmp_path / "in.parquet", tmp_path / "out.csv"
    pq.write_table(iris_table(1500, seed=3, id_column="order_id"), source)

    result = app.test_cli_runner().invoke(
        args=[
            "models",
            "score",
            "iris",
            str(source),
            "-o",
            str(output),
            "--id-column",
            "order_id",
            "--no-progress",
        ]
    )

    assert result.exit_code == 0, result.output
    assert "succeeded; 1500 rows written" in result.output
    written = pa_csv.read_csv(output)
    assert written.column("order_id").to_pylist() == [f"o-{i}" for i in range(1500)]
    expected = stored_estimator(svc, "iris").predict(iris_table(1500, seed=3).to_pandas()[IRIS_FEATURES])
    assert written.column("prediction").to_pylist() == expected.tolist()


def test_finished_batch_jobs_past_retention_are_deleted_with_their_files(
    unserved, client, svc, registered, bulk_worker
):
    from datetime import timedelta

    from sqlalchemy import update

    from app.db import utcnow

    done = wait_until_finished(
        client,
        client.post(
            "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(50)), content_type=PARQUET
        ).json["id"],
    )
    _, queued_client = unserved
    waiting = queued_client.post(
        "/v1/models/iris/batch-jobs", data=parquet_bytes(iris_table(50)), content_type=PARQUET
    ).json
    long_ago = utcnow() - timedelta(days=30)
    with svc.engine.begin() as conn:
        conn.execute(update(BulkJob).where(BulkJob.id == uuid.UUID(done["id"])).values(completed_at=long_ago))
        conn.execute(
            update(BulkJob).where(BulkJob.id == uuid.UUID(waiting["id"])).values(created_at=long_ago)
        )
    directory = Path(svc.settings.batch_root) / done["id"]
    assert (directory / "result.parquet").exists()

    assert bulk_scoring.expire_old_batch_jobs(svc) >= 1

    assert not directory.exists()
    assert client.get(f"/v1/batch-jobs/{done['id']}").status_code == 404
    assert client.get(f"/v1/batch-jobs/{waiting['id']}").json["status"] == "queued", "unfinished jobs stay"
    client.delete(f"/v1/batch-jobs/{waiting['id']}")


# -- scored while the file is still read (app/batch_jobs/intake.py); warm bulk workers ----------

_CHUNK = re.compile(r"^([0-9a-f-]+)/input/chunk-(\d+)\.parquet$")


class HeldBackStore(ObjectStore):
    """The real batch store, except that input chunk ``hold_from`` and later are written only once
    chunk 0 of the same job has been scored (or 30 s passed): if chunks were sent only after the
    whole file was rewritten, chunk 0 could not finish first, and ``scored_first`` stays empty."""

    def __init__(self, root: str, engine: Any, hold_from: int) -> None:
        super().__init__(root)
        self.engine, self.hold_from = engine, hold_from
        self.scored_first: set[str] = set()

    @contextmanager
    def writing(self, key: str) -> Iterator[Any]:
        found = _CHUNK.match(key)
        if found and int(found.group(2)) >= self.hold_from and found.group(1) not in self.scored_first:
            job_id = uuid.UUID(found.group(1))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with self.engine.connect() as conn:
                    status = conn.execute(
                        select(BulkChunk.status).where(BulkChunk.job_id == job_id, BulkChunk.index == 0)
                    ).scalar()
                if status == "succeeded":
                    self.scored_first.add(found.group(1))
                    break
                time.sleep(0.05)
        with super().writing(key) as out:
            yield out


def _held_back(svc: Any, hold_from: int) -> tuple[Any, HeldBackStore]:
    store = HeldBackStore(svc.settings.batch_root, svc.engine, hold_from)
    return dataclasses.replace(svc, batches=store), store


def _parquet_file(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path, row_group_size=700)  # row groups unlike the chunks
    return path


def test_a_chunk_is_scored_before_the_rest_of_the_file_is_rewritten(
    app, svc, tokens, registered, bulk_worker, tmp_path
):
    admin = client_for(app, tokens["admin"])  # the job is made with no owner
    table = arrow_table(iris_rows(4500, 7, decimals=2))  # chunks of 1,000 rows: 5 chunks
    held_svc, store = _held_back(svc, hold_from=2)

    job = jobs.create(held_svc, "iris", _parquet_file(tmp_path / "in.parquet", table), "parquet", label="in")

    assert store.scored_first == {job["id"]}, "chunk 0 was scored before chunk 2's file was written"
    done = wait_until_finished(admin, job["id"])
    assert done["status"] == "succeeded" and done["rows"]["done"] == 4500 and done["chunks"]["total"] == 5
    result = result_table(admin, job["id"])
    estimator = stored_estimator(svc, "iris")
    features = table.select(IRIS_FEATURES).to_pandas()
    assert result.column("row").to_pylist() == list(range(4500)), "every row once, in input order"
    assert result.column("prediction").to_pylist() == estimator.predict(features).tolist()
    proba = estimator.predict_proba(features)
    for j, label in enumerate(estimator.classes_):
        assert np.array_equal(result.column(f"probability_{label}").to_numpy(), proba[:, j])


def test_a_file_refused_part_way_leaves_nothing_though_its_first_chunks_were_scored(
    svc, settings, registered, bulk_worker, tmp_path
):
    rows = iris_rows(4500, 8, decimals=2)
    rows[4200][2] = float("nan")  # chunk 4: found after chunks 0-3 were written and 0-2 sent
    held_svc, store = _held_back(svc, hold_from=2)
    jobs_before = count_rows(svc, BulkJob)
    dirs_before = set(Path(settings.batch_root).iterdir())

    with pytest.raises(InvalidInput, match="row 4200, column 'petal length"):
        jobs.create(held_svc, "iris", _parquet_file(tmp_path / "bad.parquet", arrow_table(rows)), "parquet",
                    label="bad")  # fmt: skip

    assert len(store.scored_first) == 1, "chunk 0 was scored before the bad row was read"
    assert count_rows(svc, BulkJob) == jobs_before, "the job's row was taken back"
    (job_id,) = store.scored_first
    with svc.engine.connect() as conn:
        assert not conn.execute(select(BulkChunk.index).where(BulkChunk.job_id == uuid.UUID(job_id))).all()
    # A chunk that was being scored when the file was refused deletes what it wrote.
    deadline = time.monotonic() + 20
    while (Path(settings.batch_root) / job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a chunk still running would write its part now
    left = {p for p in Path(settings.batch_root).iterdir() if p.name != "uploads"} - dirs_before
    assert not left, f"no job directory is left behind: {left}"


def test_a_fresh_bulk_worker_holds_the_served_model_before_its_first_chunk(svc, settings, app, tmp_path):
    iris = load_iris(as_frame=True)
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target),
                tmp_path / "m.joblib")  # fmt: skip
    name = f"warm-bulk-{uuid.uuid4().hex[:6]}"
    version = svc.registry.register(name, tmp_path / "m.joblib").version
    svc.registry.set_alias(name, "production", version)
    node = f"bulk-fresh-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    env = settings_env(settings) | {"WARM_INTERVAL_SECONDS": "1", "WORKER_METRICS_BIND": ""}
    redis = Redis.from_url(settings.redis_url)

    with celery_worker(app, worker_argv("bulk", node, 2), env, node, tmp_path / "worker.log"):
        pool = _pool_of(node)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not pool <= _holders(redis, name, version):
            time.sleep(0.2)
        holders = _holders(redis, name, version)

    assert len(pool) == 2 and pool <= holders, (
        f"both pool processes {pool} hold {name} v{version} with no chunk sent (held by {holders})"
    )


def _pool_of(node: str) -> set[int]:
    for proc in psutil.process_iter(["cmdline"]):
        if node in " ".join(proc.info["cmdline"] or []) and "-Q" in (proc.info["cmdline"] or []):
            children = proc.children()
            if children:
                return {child.pid for child in children}
    return set()


def _holders(redis: Redis, name: str, version: int) -> set[int]:
    fields = redis.hgetall(held.key(name, version))
    return {int(field.decode().rpartition(":")[2]) for field in fields}


def test_a_job_whose_file_was_never_read_to_its_end_is_deleted_by_the_sweeper(svc, settings, registered):
    """As when the API process died mid-read: the job is stored, two chunks written, never sealed."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app.batch_jobs.intake import Intake, drop_abandoned

    def started(job_id: uuid.UUID) -> Intake:
        intake = Intake(svc, job_id, {"model_name": "iris", "model_version": 1, "source": "x", "id_column": None,
                                      "output_format": "parquet", "chunk_rows": 1000, "owner_key_id": None,
                                      "callback_url": None})  # fmt: skip
        for index in range(2):
            with svc.batches.writing(f"{job_id}/input/chunk-{index:06d}.parquet") as out:
                out.write(b"x")
            intake.written(index, 1000)
        return intake

    stalled, reading = uuid.uuid4(), uuid.uuid4()
    started(stalled), started(reading)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with svc.engine.begin() as conn:
        conn.execute(update(BulkJob).where(BulkJob.id == stalled).values(created_at=long_ago))
        conn.execute(update(BulkChunk).where(BulkChunk.job_id == stalled).values(queued_at=long_ago))

    assert drop_abandoned(svc) == 1
    with svc.engine.connect() as conn:
        left = set(conn.execute(select(BulkJob.id).where(BulkJob.id.in_([stalled, reading]))).scalars())
        chunks = conn.execute(select(BulkChunk.index).where(BulkChunk.job_id == stalled)).all()
    assert left == {reading}, "the stalled job is gone, the one still being read stays"
    assert not chunks and not (Path(settings.batch_root) / str(stalled)).exists()
    assert (Path(settings.batch_root) / str(reading)).exists()
