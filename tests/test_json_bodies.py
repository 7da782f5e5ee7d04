"""Any body sent as JSON to any route that reads JSON gets a JSON answer, never a 5xx.

Found from outside: ``{"inputs": [[...]], "\\ud800": 1}`` (an escaped lone surrogate as a key)
was a 500. The class, not the case: hypothesis writes JSON texts holding lone surrogates in
keys and values, NaN and Infinity, integers beyond any float, nesting deeper than Python
recurses, a byte-order mark, invalid UTF-8, cut-off text, and a good body with such a field
added, and sends each to every operation of /openapi.json with a JSON request body (on a
model of its own, so what a generated body changes stays there).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import IRIS_FEATURES, client_for

MODEL = "hostile"

# Text that may hold lone surrogates (category Cs): json.dumps writes them as \\udXXX escapes.
text = st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=6)
numbers = st.integers() | st.integers(10**308, 10**400) | st.floats()  # floats: NaN, Infinity too
values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
#: A body each route would take, so that an added field reaches the route's own decoding.
GOOD = {
    "POST /v1/models/{name}/predictions": {"inputs": [[5.1, 3.5, 1.4, 0.2]]},
    "POST /v1/predictions/{job_id}/feedback": {"labels": [0]},
    "POST /v1/models/{name}/batch-jobs": {"path": "rows.csv"},
    "PUT /v1/models/{name}/aliases/{alias}": {"version": 1},
    "POST /v1/models/{name}/aliases/{alias}/rollback": {"reason": "fuzz"},
    "PUT /v1/models/{name}/traffic": {"routes": [{"alias": "champion"}]},
    "PUT /v1/models/{name}/pool": {"pool": "default"},
    "PUT /v1/models/{name}/deadline": {"default_deadline_ms": 60000},
    "POST /v1/webhooks": {"url": "https://hooks.example.com/predq", "events": ["prediction.succeeded"]},
    **{
        f"POST /v2/models/{{name}}{version}/infer": {
            "inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in IRIS_FEATURES]
        }
        for version in ("", "/versions/{version}")
    },
}


def _texts(operation: str) -> st.SearchStrategy[bytes]:
    added = st.builds(lambda key, value: {**GOOD[operation], key: value}, text, values)
    documents = (values | added).map(lambda v: json.dumps(v).encode())
    return st.one_of(
        documents,
        documents.map(lambda b: b"\xef\xbb\xbf" + b),  # a byte-order mark
        documents.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # cut off
        documents.map(lambda b: b.replace(b"\\u", b"\xff\\u", 1)),  # invalid UTF-8
        st.integers(1, 20_000).map(lambda n: b'{"inputs": ' + b"[" * n + b"]" * n + b"}"),
        st.binary(max_size=40),
    )


@pytest.fixture(scope="module")
def hostile(app: Any, svc: Any, artifacts: dict[str, Any], tokens: dict[str, str]) -> Any:
    svc.registry.register(MODEL, artifacts["iris"])
    return client_for(app, tokens["admin"])


@pytest.fixture(scope="module")
def json_operations(hostile: Any) -> list[tuple[str, str]]:
    document = hostile.get("/openapi.json").json
    found = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert {f"{m} {p}" for m, p in found} == set(GOOD), "a route reads JSON that this test does not send to"
    return found


@pytest.mark.parametrize("operation", sorted(GOOD))
def test_any_json_text_gets_a_json_answer_and_never_a_server_error(
    hostile: Any, json_operations: list[tuple[str, str]], operation: str
) -> None:
    method, path = operation.split(" ", 1)
    url = path.format(name=MODEL, alias="champion", job_id=uuid.uuid4(), version=1)
    # No worker runs here: an infer that would wait for one answers 202 at once instead.
    prefer = {"Prefer": "respond-async"} if path.startswith("/v2/") else {}

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=_texts(operation))
    def answered(body: bytes) -> None:
        response = hostile.open(
            url, method=method, data=body, content_type="application/json", headers=prefer
        )
        assert response.status_code < 500, (body[:200], response.get_data(as_text=True)[:300])
        assert response.is_json, (body[:200], response.status_code)
        if response.status_code >= 400 and path.startswith("/v2/"):
            assert isinstance(response.json["error"], str) and response.json["error"], response.json  # V2's
        elif response.status_code >= 400:
            assert response.json["error"]["code"], response.json

    answered()
