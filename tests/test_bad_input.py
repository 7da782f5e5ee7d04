"""Every kind of bad request gets its JSON error and status, and writes nothing anywhere."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import and_, func, select, text

from app.db import IdempotencyKey, Job
from app.predictions.idempotency import owned_key
from tests.helpers import count_jobs, predq_keys

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS = "/v1/models/iris/predictions"


def body(payload: Any) -> dict[str, Any]:
    return raw(json.dumps(payload))


def raw(text: str) -> dict[str, Any]:
    """A JSON-typed body sent as is (for what json.dumps would not write: NaN, broken JSON)."""
    return {"data": text, "content_type": "application/json"}


# fmt: off
CASES = [
    # id, method, url, request kwargs, status, error code, details that must be present
    ("malformed json", "post", IRIS, raw('{"inputs": [[1,'), 400, "malformed_json", {}),
    ("inputs nested 10,000 deep", "post", IRIS, raw('{"inputs": ' + "[" * 10_000 + "]" * 10_000 + "}"), 400, "malformed_json", {}),
    ("a lone surrogate as a key", "post", IRIS, raw('{"inputs": [[5.1, 3.5, 1.4, 0.2]], "\\ud800": 1}'), 400, "malformed_json", {}),
    ("a lone surrogate in a row", "post", IRIS, raw('{"inputs": [[5.1, 3.5, 1.4, "\\udc00"]]}'), 400, "malformed_json", {}),
    ("body nested 10,000 deep", "post", IRIS, raw("[" * 10_000 + "]" * 10_000), 400, "malformed_json", {}),
    ("feedback nested 10,000 deep", "post", f"/v1/predictions/{uuid.uuid4()}/feedback", raw('{"labels": ' + "[" * 10_000 + "]" * 10_000 + "}"), 400, "malformed_json", {}),
    ("not json", "post", IRIS, {"data": "inputs=1", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", {}),
    ("no content type", "post", IRIS, {"data": json.dumps({"inputs": [GOOD_ROW]})}, 415, "unsupported_media_type", {}),
    ("inputs missing", "post", IRIS, body({}), 422, "invalid_input", {"fields": {"inputs": ["Missing data for required field."]}}),
    ("inputs empty", "post", IRIS, body({"inputs": []}), 422, "invalid_input", {}),
    ("inputs not a list", "post", IRIS, body({"inputs": {"a": 1}}), 422, "invalid_input", {}),
    ("body not an object", "post", IRIS, body([GOOD_ROW]), 422, "invalid_input", {}),
    ("too few features", "post", IRIS, body({"inputs": [GOOD_ROW, [1.0, 2.0]]}), 422, "invalid_input", {"row": 1, "expected": 4, "got": 2}),
    ("too many features", "post", IRIS, body({"inputs": [GOOD_ROW + [9.0]]}), 422, "invalid_input", {"row": 0, "expected": 4}),
    ("unknown feature name", "post", IRIS, body(
            {
                "inputs": [
                    {
                        "sepal length (cm)": 1,
                        "sepal width (cm)": 1,
                        "petal length (cm)": 1,
                        "petal width (cm)": 1,
                        "colour": 2,
                    }
                ]
            }
        ), 422, "invalid_input", {"row": 0, "unknown": ["colour"]}),
    ("missing feature name", "post", IRIS, body({"inputs": [GOOD_ROW, {"sepal length (cm)": 1, "sepal width (cm)": 1, "petal length (cm)": 1}]}), 422, "invalid_input", {"row": 1, "missing": ["petal width (cm)"]}),
    ("string value", "post", IRIS, body({"inputs": [[5.1, "3.5", 1.4, 0.2]]}), 422, "invalid_input", {"row": 0, "field": "sepal width (cm)"}),
    ("boolean value", "post", IRIS, body({"inputs": [GOOD_ROW, [True, 3.5, 1.4, 0.2]]}), 422, "invalid_input", {"row": 1, "field": "sepal length (cm)"}),
    ("null value", "post", IRIS, body({"inputs": [[5.1, 3.5, None, 0.2]]}), 422, "invalid_input", {"row": 0, "field": "petal length (cm)"}),
    ("NaN", "post", IRIS, raw('{"inputs": [[5.1, NaN, 1.4, 0.2]]}'), 422, "invalid_input", {"row": 0, "field": "sepal width (cm)"}),
    ("infinity", "post", IRIS, raw('{"inputs": [[5.1, 3.5, Infinity, 0.2]]}'), 422, "invalid_input", {"row": 0, "field": "petal length (cm)"}),
    ("beyond float32, for a forest", "post", IRIS, body({"inputs": [GOOD_ROW, [5.1, 3.5e38, 1.4, 0.2]]}), 422, "invalid_input", {"row": 1, "field": "sepal width (cm)"}),
    ("beyond float32, object row", "post", IRIS, body({"inputs": [{"sepal length (cm)": -1e308, "sepal width (cm)": 1, "petal length (cm)": 1, "petal width (cm)": 1}]}), 422, "invalid_input", {"row": 0, "field": "sepal length (cm)"}),
    ("overflowing number", "post", IRIS, raw('{"inputs": [[5.1, 3.5, 1.4, 1e999]]}'), 422, "invalid_input", {"row": 0, "field": "petal width (cm)"}),
    ("integer too large for a float", "post", IRIS, raw('{"inputs": [[5.1, 3.5, 1.4, 1' + "0" * 400 + ']]}'), 422, "invalid_input", {"row": 0, "field": "petal width (cm)"}),
    ("row is a number", "post", IRIS, body({"inputs": [GOOD_ROW, 7]}), 422, "invalid_input", {"row": 1}),
    ("row is null", "post", IRIS, body({"inputs": [GOOD_ROW, None]}), 422, "invalid_input", {"row": 1}),
    ("inputs not a list", "post", IRIS, body({"inputs": {"0": GOOD_ROW}}), 422, "invalid_input", {}),
    ("object row, model without names", "post", "/v1/models/plain/predictions", body({"inputs": [{"a": 1, "b": 2, "c": 3}]}), 422, "invalid_input", {"row": 0}),
    ("version not an integer", "post", IRIS, body({"inputs": [GOOD_ROW], "version": "1"}), 422, "invalid_input", {}),
    ("Idempotency-Key too long", "post", IRIS, body({"inputs": [GOOD_ROW]}) | {"headers": {"Idempotency-Key": "k" * 201}}, 422, "invalid_input", {}),
    ("Idempotency-Key empty", "post", IRIS, body({"inputs": [GOOD_ROW]}) | {"headers": {"Idempotency-Key": ""}}, 422, "invalid_input", {"fields": {"Idempotency-Key": ["empty: printable ASCII only"]}}),
    ("Idempotency-Key not ASCII", "post", IRIS, body({"inputs": [GOOD_ROW]}) | {"headers": {"Idempotency-Key": "clé"}}, 422, "invalid_input", {}),
    ("alias with a NUL byte", "post", IRIS, body({"inputs": [GOOD_ROW], "alias": "a\u0000"}), 404, "alias_not_found", {}),
    ("model name with a NUL byte", "get", "/v1/models/ir%00is", {}, 404, "model_not_found", {}),
    ("version beyond 32 bits", "post", IRIS, body({"inputs": [GOOD_ROW], "version": 2**31}), 422, "invalid_input", {}),
    ("unknown top-level field", "post", IRIS, body({"inputs": [GOOD_ROW], "model": "x"}), 422, "invalid_input", {}),
    ("wait too long", "post", IRIS + "?wait=31", body({"inputs": [GOOD_ROW]}), 422, "invalid_input", {}),
    ("too many rows", "post", IRIS, body({"inputs": [GOOD_ROW] * 501}), 413, "payload_too_large", {"rows": 501, "limit": 500}),
    ("body too large", "post", IRIS, body({"inputs": [GOOD_ROW], "pad": "x" * (9 * 1024 * 1024)}), 413, "payload_too_large", {}),
    ("unknown model", "post", "/v1/models/nope/predictions", body({"inputs": [GOOD_ROW]}), 404, "model_not_found", {"model": "nope"}),
    ("unknown version", "post", IRIS, body({"inputs": [GOOD_ROW], "version": 99}), 404, "version_not_found", {"version": 99}),
    ("unknown alias", "post", IRIS, body({"inputs": [GOOD_ROW], "alias": "staging"}), 404, "alias_not_found", {"alias": "staging"}),
    ("unknown job id", "get", f"/v1/predictions/{uuid.uuid4()}", {}, 404, "job_not_found", {}),
    ("malformed job id", "get", "/v1/predictions/not-a-uuid", {}, 404, "job_not_found", {}),
    ("unknown model info", "get", "/v1/models/nope", {}, 404, "model_not_found", {}),
    ("alias events of an unknown model", "get", "/v1/models/nope/alias-events", {}, 404, "model_not_found", {}),
    ("training runs of an unknown model", "get", "/v1/models/nope/training-runs", {}, 404, "model_not_found", {}),
    ("drift of an unknown model", "get", "/v1/models/nope/drift", {}, 404, "model_not_found", {}),
    ("unknown route", "get", "/v1/nothing-here", {}, 404, "not_found", {}),
    ("wrong method", "delete", IRIS, {}, 405, "method_not_allowed", {}),
]
# fmt: on


@pytest.mark.parametrize(
    "method,url,kwargs,status,code,details", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_gets_json_error_and_writes_nothing(
    client, svc, registered, method, url, kwargs, status, code, details
):
    jobs_before, keys_before = count_jobs(svc), predq_keys(svc)

    response = getattr(client, method)(url, **kwargs)

    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json
    error = response.json["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    for key, value in details.items():
        assert error["details"][key] == value
    assert count_jobs(svc) == jobs_before, "a bad request stored a job"
    assert predq_keys(svc) == keys_before, "a bad request touched Redis"


@pytest.mark.parametrize("method", ["delete", "put", "trace"])
def test_a_method_the_route_lacks_gets_405_with_allow_and_a_json_body(client, method):
    response = client.open("/healthz", method=method.upper())

    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}
    assert response.json["error"]["code"] == "method_not_allowed"


def test_idempotency_key_returns_the_same_job(client, svc, registered):
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    payload = {"inputs": [[4.9, 3.1, 1.5, 0.11]]}

    first = client.post(IRIS, json=payload, headers=headers)
    jobs_after_first = count_jobs(svc)
    again = client.post(IRIS, json=payload, headers=headers)

    assert first.status_code in (200, 202)
    assert again.json["id"] == first.json["id"]
    assert count_jobs(svc) == jobs_after_first


def test_a_replay_whose_key_outlived_its_job_stores_the_job_once_more(
    client, svc, registered, predict_key_id
):
    key = f"order-{uuid.uuid4()}"
    payload = {"inputs": [[4.9, 3.1, 1.5, 0.13]]}
    first = client.post(IRIS, json=payload, headers={"Idempotency-Key": key})
    with svc.engine.begin() as conn:  # gone (retention, a hand) while its key's row stayed
        conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": uuid.UUID(first.json["id"])})

    again = client.post(IRIS, json=payload, headers={"Idempotency-Key": key})

    assert first.status_code == 202 and again.status_code == 202, again.json
    with svc.engine.connect() as conn:
        keyed = conn.execute(
            select(Job.id, Job.inputs, Job.request_hash)
            .join(
                IdempotencyKey,
                and_(Job.id == IdempotencyKey.job_id, Job.created_at == IdempotencyKey.created_at),
            )
            .where(IdempotencyKey.key == owned_key(key, predict_key_id))
        ).one()
        same_body = conn.execute(select(func.count()).where(Job.request_hash == keyed.request_hash)).scalar()
    assert (str(keyed.id), keyed.inputs) == (again.json["id"], payload["inputs"]), (
        "the key names the job stored again"
    )
    assert same_body == 1, "one job for the key: the deleted one is not back, no second one was made"
    assert client.post(IRIS, json=payload, headers={"Idempotency-Key": key}).json["id"] == again.json["id"]


def test_idempotency_key_with_another_body_conflicts_and_writes_nothing(client, svc, registered, worker):
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    # Finished before the snapshot, so its result keys are not mistaken for the conflict's.
    first = client.post(IRIS + "?wait=20", json={"inputs": [[4.8, 3.1, 1.5, 0.12]]}, headers=headers)
    jobs_before, keys_before = count_jobs(svc), predq_keys(svc)

    conflict = client.post(IRIS, json={"inputs": [[9.9, 3.1, 1.5, 0.12]]}, headers=headers)

    assert conflict.status_code == 409
    assert conflict.json["error"]["code"] == "idempotency_conflict"
    assert conflict.json["error"]["details"]["job_id"] == first.json["id"]
    assert count_jobs(svc) == jobs_before
    assert predq_keys(svc) == keys_before
