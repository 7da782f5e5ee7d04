"""Property tests for the row validator and the submit endpoint: any JSON gives a job or a 413/422."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidInput, PayloadTooLarge
from app.registry.signature import rows_to_matrix
from tests.helpers import IRIS_FEATURES

NAMES = {"sepal_length": 0, "sepal_width": 1, "petal_length": 2, "petal_width": 3}
MAX_ROWS = 20

finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**53), max_value=2**53)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


@given(st.lists(st.lists(finite, min_size=4, max_size=4), min_size=1, max_size=MAX_ROWS))
def test_rows_of_numbers_become_exactly_that_matrix(rows):
    matrix = rows_to_matrix(rows, 4, NAMES, MAX_ROWS)
    assert matrix.dtype == np.float64 and matrix.shape == (len(rows), 4)
    assert matrix.tolist() == [[float(v) for v in row] for row in rows]


@given(st.lists(st.lists(finite, min_size=4, max_size=4), min_size=1, max_size=5), st.randoms())
def test_named_rows_in_any_key_order_match_the_list_form(rows, random):
    named = []
    for row in rows:
        keys = list(NAMES)
        random.shuffle(keys)
        named.append({key: row[NAMES[key]] for key in keys})
    assert (
        rows_to_matrix(named, 4, NAMES, MAX_ROWS).tolist()
        == rows_to_matrix(rows, 4, NAMES, MAX_ROWS).tolist()
    )


@settings(max_examples=500)
@given(st.lists(json_values, max_size=MAX_ROWS + 3), st.booleans())
def test_any_json_gives_a_finite_matrix_or_a_client_error(rows, with_names):
    try:
        matrix = rows_to_matrix(rows, 4, NAMES if with_names else None, MAX_ROWS)
    except PayloadTooLarge:
        assert len(rows) > MAX_ROWS
        return
    except InvalidInput as exc:
        assert exc.status == 422 and "row" in exc.details
        assert 0 <= exc.details["row"] < len(rows)
        return
    assert matrix.shape == (len(rows), 4)
    assert all(math.isfinite(v) for v in matrix.ravel())


@pytest.mark.parametrize("huge", [10**400, -(10**400)])
def test_an_integer_too_large_for_a_float_is_a_422(huge):
    with pytest.raises(InvalidInput, match="out of range"):
        rows_to_matrix([[huge, 1, 2, 3]], 4, None, MAX_ROWS)


valid_row = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(10**6), 10**6), min_size=4, max_size=4
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(valid_row | json_values, min_size=1, max_size=8), wait=st.booleans())
def test_the_submit_endpoint_answers_any_rows_with_a_job_or_a_client_error(client, registered, rows, wait):
    """Through the real request path (auth, limits, routing, the database, Redis): mixed good
    and bad rows give 200/202 with a job when every row fits, else a 422 naming a row."""
    fits = all(_fits_iris(row) for row in rows)
    response = client.post(
        "/v1/models/iris/predictions" + ("?wait=0.05" if wait else ""), json={"inputs": rows}
    )

    if fits:
        assert response.status_code in (200, 202), response.json
        assert response.json["model"] == {"name": "iris", "version": 1}
    else:
        assert response.status_code == 422, response.json
        assert response.json["error"]["code"] == "invalid_input"


IRIS_NAMES = set(IRIS_FEATURES)


def _fits_iris(row: object) -> bool:
    """What the iris model accepts, written independently of app/registry/signature.py."""
    if isinstance(row, dict):
        return set(row) == IRIS_NAMES and all(_is_number(v) for v in row.values())
    return isinstance(row, list) and len(row) == 4 and all(_is_number(v) for v in row)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
