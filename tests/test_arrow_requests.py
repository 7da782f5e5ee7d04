"""Online requests whose rows are an Arrow IPC stream: the same answers and errors as JSON."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import count_jobs, stored_estimator
from tests.test_end_to_end import expected_outputs

ARROW = "application/vnd.apache.arrow.stream"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def arrow_body(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def iris_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(3)


def test_an_arrow_request_is_answered_like_the_same_rows_in_json(client, svc, registered, worker):
    rows = iris_rows(300, seed=11)
    table = pa.table({name: rows[:, j] for j, name in enumerate(FEATURES)})
    table = table.select(list(reversed(FEATURES)))  # columns out of order: matched by name

    response = client.post("/v1/models/iris/predictions?wait=20", data=arrow_body(table), content_type=ARROW)

    assert response.status_code == 200, response.json
    assert response.json["status"] == "succeeded"
    assert response.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), rows.tolist())


def test_an_arrow_request_may_name_its_version_in_the_query_string(client, registered, worker):
    table = pa.table({name: iris_rows(3, seed=12)[:, j] for j, name in enumerate(FEATURES)})

    response = client.post(
        "/v1/models/iris/predictions?wait=20&version=1", data=arrow_body(table), content_type=ARROW
    )

    assert response.status_code == 200 and response.json["model"]["version"] == 1


def _table(**changes) -> pa.Table:
    columns = {name: pa.array(iris_rows(5, seed=13)[:, j]) for j, name in enumerate(FEATURES)}
    columns.update(changes)
    return pa.table({k: v for k, v in columns.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "query", "status", "words"),
    [
        (b"not arrow at all", "", 400, "not an Arrow IPC stream"),
        (arrow_body(_table(**{FEATURES[0]: None})), "", 422, "missing sepal length (cm)"),
        (arrow_body(_table(color=pa.array([1.0] * 5))), "", 422, "extra color"),
        (arrow_body(_table(**{FEATURES[1]: pa.array(["1", "2", "x", "4", "5"])})), "", 422, "row 2: 'x'"),
        (arrow_body(_table(**{FEATURES[2]: pa.array([1.0, 2.0, None, 1.0, 1.0])})), "", 422,
         "row 2, column 'petal length (cm)': the value is missing"),
        (arrow_body(_table(**{FEATURES[3]: pa.array([1.0, 1.0, 1.0, np.inf, 1.0])})), "", 422, "row 3"),
        (arrow_body(pa.table({name: np.ones(501) for name in FEATURES})), "", 413, "at most 500"),
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
