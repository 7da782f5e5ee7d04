"""Online requests whose rows are an Arrow IPC stream: the same answers and errors as JSON."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select, text

from app.db import Batch, Job
from app.predictions.cache import ROWS_PER_KEY
from app.predictions.queue import cache_keys
from tests.helpers import (
    IRIS_FEATURES,
    IRIS_HIGH,
    IRIS_LOW,
    arrow_body,
    arrow_table,
    count_jobs,
    count_rows,
    expected_outputs,
    iris_rows,
    stored_estimator,
)

ARROW = "application/vnd.apache.arrow.stream"


def test_an_arrow_request_is_answered_like_the_same_rows_in_json(client, svc, registered, worker):
    rows = iris_rows(300, seed=11)
    table = arrow_table(rows).select(list(reversed(IRIS_FEATURES)))  # columns out of order: matched by name

    response = client.post("/v1/models/iris/predictions?wait=20", data=arrow_body(table), content_type=ARROW)

    assert response.status_code == 200, response.json
    assert response.json["status"] == "succeeded"
    assert response.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows.tolist())


def test_an_arrow_request_may_name_its_version_in_the_query_string(client, registered, worker):
    table = arrow_table(iris_rows(3, seed=12))

    response = client.post(
        "/v1/models/iris/predictions?wait=20&version=1", data=arrow_body(table), content_type=ARROW
    )

    assert response.status_code == 200 and response.json["model"]["version"] == 1


def test_a_large_request_sent_again_is_answered_at_once_from_one_cache_key(client, svc, registered, worker):
    rows = iris_rows(ROWS_PER_KEY + 50)  # fresh rows: never cached
    body = arrow_body(arrow_table(rows))
    first = client.post("/v1/models/iris/predictions?wait=20", data=body, content_type=ARROW)
    version, batches = first.json["model"]["version"], count_rows(svc, Batch)

    again = client.post("/v1/models/iris/predictions", data=body, content_type=ARROW)

    assert again.status_code == 200, "every row cached: answered at once"
    assert (
        again.json["outputs"]
        == first.json["outputs"]
        == expected_outputs(stored_estimator(svc, "iris"), rows.tolist())
    )
    assert count_rows(svc, Batch) == batches, "no worker ran"
    (whole,) = cache_keys("iris", version, rows, whole=True)
    assert svc.cache.exists(whole) == 1, "the request's outputs are cached under one key"
    assert svc.cache.exists(*cache_keys("iris", version, rows)) == 0, "no key per row"


def test_a_large_request_with_one_row_changed_is_not_answered_from_the_cache(client, svc, registered, worker):
    rows = iris_rows(ROWS_PER_KEY + 1)
    client.post("/v1/models/iris/predictions?wait=20", data=arrow_body(arrow_table(rows)), content_type=ARROW)
    rows[7, 2] += 0.5
    batches = count_rows(svc, Batch)

    changed = client.post(
        "/v1/models/iris/predictions?wait=20", data=arrow_body(arrow_table(rows)), content_type=ARROW
    )

    assert changed.status_code == 200 and changed.json["status"] == "succeeded"
    assert count_rows(svc, Batch) == batches + 1, "a worker computed the request"
    assert changed.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows.tolist())


def test_a_large_jobs_inputs_and_outputs_are_stored_compressed_with_lz4(client, svc, registered, worker):
    rows = iris_rows(ROWS_PER_KEY + 200)
    response = client.post(
        "/v1/models/iris/predictions?wait=20", data=arrow_body(arrow_table(rows)), content_type=ARROW
    )

    with svc.engine.connect() as conn:
        compression = conn.execute(
            text(
                "SELECT pg_column_compression(inputs), pg_column_compression(outputs) FROM jobs WHERE id = :id"
            ),
            {"id": response.json["id"]},
        ).one()
    assert tuple(compression) == ("lz4", "lz4"), "not PostgreSQL's slower default, pglz"


def test_a_large_requests_rows_reach_the_model_and_the_database_bit_for_bit(client, svc, registered, worker):
    # Full float64 precision (not rounded): the rows travel to the worker as their bytes.
    rows = np.random.default_rng().uniform(IRIS_LOW, IRIS_HIGH, size=(ROWS_PER_KEY + 100, 4))

    response = client.post(
        "/v1/models/iris/predictions?wait=20", data=arrow_body(arrow_table(rows)), content_type=ARROW
    )

    assert response.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows.tolist())
    with svc.engine.connect() as conn:
        stored = conn.execute(select(Job.inputs).where(Job.id == uuid.UUID(response.json["id"]))).scalar_one()
    assert stored == rows.tolist(), "the job's inputs are the rows sent, to the last bit"


def _table(**changes) -> pa.Table:
    columns = dict(zip(IRIS_FEATURES, iris_rows(5, seed=13).T, strict=True))
    columns.update(changes)
    return pa.table({k: v for k, v in columns.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "query", "status", "words"),
    [
        (b"not arrow at all", "", 400, "not an Arrow IPC stream"),
        (arrow_body(_table(**{IRIS_FEATURES[0]: None})), "", 422, "missing sepal length (cm)"),
        (arrow_body(_table(color=pa.array([1.0] * 5))), "", 422, "extra color"),
        (arrow_body(_table(**{IRIS_FEATURES[1]: pa.array(["1", "2", "x", "4", "5"])})), "", 422, "row 2: 'x'"),
        (arrow_body(_table(**{IRIS_FEATURES[2]: pa.array([1.0, 2.0, None, 1.0, 1.0])})), "", 422,
         "row 2, column 'petal length (cm)': the value is missing"),
        (arrow_body(_table(**{IRIS_FEATURES[3]: pa.array([1.0, 1.0, 1.0, np.inf, 1.0])})), "", 422, "row 3"),
        (arrow_body(pa.table({name: np.ones(501) for name in IRIS_FEATURES})), "", 413, "at most 500"),
        (arrow_body(_table()), "version=abc", 422, "query string"),
        (arrow_body(_table()), "colour=red", 422, "query string"),
    ],
    ids=["garbage", "missing column", "extra column", "strings", "null", "infinity", "too many rows",
         "bad version", "unknown option"],
)  # fmt: skip
def test_a_bad_arrow_request_gets_a_clear_error_and_stores_nothing(
    client, svc, registered, body, query, status, words
):
    before = count_jobs(svc)

    response = client.post(f"/v1/models/iris/predictions?{query}", data=body, content_type=ARROW)

    assert response.status_code == status, response.json
    assert words in response.json["error"]["message"], response.json
    assert count_jobs(svc) == before


def test_arrow_is_for_submitting_only(client, registered):
    response = client.post(
        "/v1/predictions/00000000-0000-0000-0000-000000000000/feedback", data=b"x", content_type=ARROW
    )

    assert response.status_code == 415
