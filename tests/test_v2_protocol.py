"""The Open Inference Protocol (V2) under /v2, spoken to by NVIDIA's own client (tritonclient)
against a running predq (granian, a real worker): outputs equal the stored model's in process,
bad input is a 400 in V2's error shape with nothing stored."""

from __future__ import annotations

import uuid

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from tritonclient.utils import InferenceServerException

from app import create_app
from tests.helpers import (
    IRIS_FEATURES,
    bearer,
    client_for,
    count_jobs,
    iris_rows,
    scrape_test_client,
    stored_estimator,
)
from tests.slow_model import MARKER, refuse_marked_rows, slow_identity


class _Bearer:
    """A tritonclient plugin: the API key on every request."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"


@pytest.fixture
def triton_client(api_server, tokens, registered, worker):
    client = triton.InferenceServerClient(api_server.removeprefix("http://"), network_timeout=60)
    client.register_plugin(_Bearer(tokens["predict"]))
    yield client
    client.close()


def _input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP64" if array.dtype == np.float64 else "FP32")
    return tensor.set_data_from_numpy(array, binary_data=binary)


def test_health_and_metadata_through_tritonclient(triton_client, svc):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()  # database, Redis and a worker, as /readyz
    assert triton_client.is_model_ready("plain")
    assert triton_client.is_model_ready("iris", model_version="1")
    assert not triton_client.is_model_ready("no-such-model")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]

    iris = triton_client.get_model_metadata("iris")
    plain = triton_client.get_model_metadata("plain", model_version="1")

    # Fitted on a DataFrame: a tensor per feature; trees read float32.
    assert iris["inputs"] == [{"name": n, "datatype": "FP32", "shape": [-1]} for n in IRIS_FEATURES]
    assert iris["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert iris["versions"] == ["1"] and iris["platform"] == "scikit-learn"
    # Fitted on an array: one matrix; a regressor has no predict_proba.
    assert plain["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]
    assert plain["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_a_matrix_equals_the_model_in_process(triton_client, svc, binary):
    rows = np.random.default_rng().uniform(-0.1, 0.1, size=(40, 3))
    before = count_jobs(svc)

    result = triton_client.infer(
        "plain",
        [_input("input-0", rows, binary)],
        outputs=[triton.InferRequestedOutput("predict", binary_data=binary)],
    )

    expected = stored_estimator(svc, "plain").predict(rows)
    assert np.array_equal(result.as_numpy("predict"), expected)
    response = result.get_response()
    assert response["model_name"] == "plain" and response["model_version"] == "1"
    # The job is stored like any other, its id in the answer.
    assert count_jobs(svc) == before + 1
    job_id = response["id"]
    assert str(uuid.UUID(job_id)) == job_id and response["parameters"]["predq-job-id"] == job_id


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_named_inputs_of_a_dataframe_model(triton_client, svc, binary):
    frame = pd.DataFrame(iris_rows(25), columns=IRIS_FEATURES)
    inputs = [_input(name, frame[name].to_numpy(), binary) for name in reversed(IRIS_FEATURES)]

    # No outputs named: every output, binary as tritonclient asks (binary_data_output).
    result = triton_client.infer("iris", inputs, request_id="mine-7")

    estimator = stored_estimator(svc, "iris")
    assert np.array_equal(result.as_numpy("predict"), estimator.predict(frame))
    assert np.array_equal(result.as_numpy("predict_proba"), estimator.predict_proba(frame))
    assert result.get_response()["id"] == "mine-7"  # the protocol echoes the request's id


def test_outputs_asked_for_are_the_only_ones_sent(triton_client, svc):
    rows = iris_rows(3).astype(np.float32)
    inputs = [_input(name, rows[:, j].copy(), True) for j, name in enumerate(IRIS_FEATURES)]

    result = triton_client.infer(
        "iris", inputs, outputs=[triton.InferRequestedOutput("predict_proba", binary_data=False)]
    )

    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    frame = pd.DataFrame(rows.astype(np.float64), columns=IRIS_FEATURES)
    assert np.array_equal(
        result.as_numpy("predict_proba"), stored_estimator(svc, "iris").predict_proba(frame)
    )


def _plain_request(**changes):
    tensor = {
        "name": "input-0",
        "shape": [2, 3],
        "datatype": "FP64",
        "data": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
    }
    tensor.update(changes)
    return [tensor]


@pytest.mark.parametrize(
    ("inputs", "outputs", "words"),
    [
        (_plain_request(datatype="BYTES", data=["a", "b", "c", "d", "e", "f"]), None, "is BYTES"),
        (_plain_request(shape=[3, 3]), None, "needs 9 elements, its data holds 6"),
        (_plain_request(name="features"), None, "missing input 'input-0'"),
        (_plain_request(), [{"name": "predict_log_proba"}], "unknown output 'predict_log_proba'"),
        (_plain_request(data=[0.01, 0.02, 0.03, 0.04, True, 0.06]), None, "row 1: True is not a number"),
        (_plain_request(shape=[2, 4], data=[0.0] * 8), None, "the model takes [-1, 3]"),
    ],
    ids=["bytes", "shape vs data", "missing input", "unknown output", "a boolean", "width"],
)
def test_bad_input_is_a_400_in_v2_shape_and_stores_nothing(
    api_server, tokens, svc, registered, inputs, outputs, words
):
    before = count_jobs(svc)
    body = {"inputs": inputs} | ({"outputs": outputs} if outputs else {})

    response = httpx.post(f"{api_server}/v2/models/plain/infer", json=body, headers=bearer(tokens["predict"]))

    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"] and words in response.json()["error"], response.json()
    assert count_jobs(svc) == before


def test_bad_input_reaches_tritonclient_as_its_exception(triton_client, svc):
    before = count_jobs(svc)
    bad = np.array([[0.0, np.inf, 0.0]])

    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer("plain", [_input("input-0", bad, True)])

    assert raised.value.status() == "400"
    assert "input 'input-0', row 0, field 1: NaN and infinity" in raised.value.message()
    assert count_jobs(svc) == before


@pytest.mark.parametrize(
    ("body", "header_length", "words"),
    [
        (b'{"inputs": []}' + b"\0" * 8, "500", "the body holds 22 bytes"),
        (b"not json at all, nor close", "10", "not JSON"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64",'
         b' "parameters": {"binary_data_size": 24}}]}' + b"\0" * 16, None, "runs past the body"),
    ],
    ids=["header length past the body", "header not JSON", "binary size past the body"],
)  # fmt: skip
def test_a_broken_binary_body_is_a_400(api_server, tokens, svc, registered, body, header_length, words):
    before = count_jobs(svc)
    headers = bearer(tokens["predict"]) | {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    elif body.startswith(b"{"):
        headers["Inference-Header-Content-Length"] = str(body.index(b"}]}") + 3)

    response = httpx.post(f"{api_server}/v2/models/plain/infer", content=body, headers=headers)

    assert response.status_code == 400 and words in response.json()["error"], response.text
    assert count_jobs(svc) == before


def test_nested_json_data_and_too_many_rows(api_server, tokens, svc, registered, worker):
    rows = np.random.default_rng().uniform(-0.1, 0.1, size=(3, 3))
    nested = {"inputs": [{"name": "input-0", "shape": [3, 3], "datatype": "FP64", "data": rows.tolist()}]}
    auth = bearer(tokens["predict"])

    answer = httpx.post(f"{api_server}/v2/models/plain/infer", json=nested, headers=auth, timeout=60)
    # MAX_ROWS_PER_REQUEST is 500 in the tests: 501 rows are refused, in V2's shape, nothing stored.
    before = count_jobs(svc)
    many = _plain_request(shape=[501, 3], data=[0.0] * 1503)
    refused = httpx.post(f"{api_server}/v2/models/plain/infer", json={"inputs": many}, headers=auth)

    assert answer.status_code == 200, answer.text
    (predict,) = answer.json()["outputs"]
    assert predict["data"] == stored_estimator(svc, "plain").predict(rows).tolist()
    assert refused.status_code == 413 and "at most 500" in refused.json()["error"]
    assert count_jobs(svc) == before


def test_no_key_is_a_401_in_v2_shape(api_server, registered):
    response = httpx.get(f"{api_server}/v2/models/plain")

    assert response.status_code == 401 and isinstance(response.json()["error"], str)
    assert httpx.get(f"{api_server}/v2/health/live").status_code == 200  # health needs no key


def test_urls_under_v2_that_match_no_route_answer_in_v2_shape(anonymous):
    unknown = anonymous.get("/v2/no/such/route")
    wrong_method = anonymous.post("/v2/health/live")
    elsewhere = anonymous.get("/no/such/route")

    assert (
        unknown.status_code == 404
        and list(unknown.json) == ["error"]
        and isinstance(unknown.json["error"], str)
    )
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]
    assert isinstance(wrong_method.json["error"], str), wrong_method.json
    assert elsewhere.status_code == 404 and elsewhere.json["error"]["code"] == "not_found", (
        "elsewhere predq's shape"
    )


def test_respond_async_answers_202_with_the_job(api_server, tokens, registered, worker):
    body = {"inputs": _plain_request()}
    headers = bearer(tokens["predict"]) | {"Prefer": "respond-async"}

    response = httpx.post(f"{api_server}/v2/models/plain/versions/1/infer", json=body, headers=headers)

    assert response.status_code in (202, 200), response.text
    if response.status_code == 202:
        assert response.headers["Location"] == f"/v1/predictions/{response.headers['predq-job-id']}"
        job = httpx.get(
            f"{api_server}{response.headers['Location']}?wait=20", headers=bearer(tokens["predict"])
        )
        assert job.json()["status"] == "succeeded"


def _register_pipeline(svc, tmp_path, step) -> str:
    """A forest on iris behind ``step`` (tests/slow_model.py), registered under a fresh name."""
    x, y = load_iris(return_X_y=True)
    model = make_pipeline(FunctionTransformer(step), RandomForestClassifier(n_estimators=5, random_state=0))
    joblib.dump(model.fit(x, y), tmp_path / "model.joblib")
    name = f"v2-{step.__name__.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, tmp_path / "model.joblib")
    return name


def test_a_job_not_done_in_time_is_a_503_that_names_it(settings, svc, tokens, worker, tmp_path):
    name = _register_pipeline(svc, tmp_path, slow_identity)  # every batch takes 0.4 s
    impatient = create_app(settings.replace(v2_wait_seconds=0.05)).test_client()
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}

    response = impatient.post(
        f"/v2/models/{name}/infer", json={"inputs": [tensor]}, headers=bearer(tokens["predict"])
    )

    assert response.status_code == 503, response.json
    assert response.headers["Retry-After"] and "not finished" in response.json["error"]
    job = impatient.get(
        f"/v1/predictions/{response.headers['predq-job-id']}?wait=20", headers=bearer(tokens["predict"])
    )
    assert job.json["status"] == "succeeded"  # stored, and finished on /v1


def test_a_job_the_model_fails_is_a_400_naming_it(api_server, svc, tokens, worker, tmp_path):
    name = _register_pipeline(svc, tmp_path, refuse_marked_rows)
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [MARKER, 3.5, 1.4, 0.2]}

    response = httpx.post(
        f"{api_server}/v2/models/{name}/infer",
        json={"inputs": [tensor]},
        headers=bearer(tokens["predict"]),
        timeout=60,
    )

    assert response.status_code == 400 and "marker" in response.json()["error"], response.text
    assert response.headers["predq-job-id"] in response.json()["error"]


def test_v2_requests_are_rate_limited_and_counted_like_v1(app, svc, registered):
    token = svc.keys.create(f"v2-limited-{uuid.uuid4().hex[:6]}", ["predict"], rate_limit="2/minute")[1]
    client = client_for(app, token)
    bad = {"inputs": _plain_request(shape=[1, 3], data=[0.0, 0.0])}  # 2 values for 3: counted all the same

    statuses = [client.post("/v2/models/plain/infer", json=bad).status_code for _ in range(2)]
    refused = client.post("/v2/models/plain/infer", json={"inputs": _plain_request()})

    assert statuses == [400, 400] and refused.status_code == 429
    assert refused.headers["Retry-After"] and isinstance(refused.json["error"], str)
    samples = scrape_test_client(app.test_client())
    route = "/v2/models/<string:name>/infer"
    labels = frozenset({"route": route, "method": "POST", "status": "429"}.items())
    assert samples[("predq_http_requests_total", labels)] >= 1


def test_tritonclient_priority_and_a_deadline_steer_the_job(triton_client, api_server, tokens, svc):
    rows = np.random.default_rng().uniform(-0.1, 0.1, size=(2, 3))

    # Triton's priority: 1 is the highest level; predq's deadline_ms as a custom parameter.
    result = triton_client.infer(
        "plain", [_input("input-0", rows, True)], priority=1, parameters={"deadline_ms": 60000}
    )

    job = httpx.get(
        f"{api_server}/v1/predictions/{result.get_response()['id']}", headers=bearer(tokens["predict"])
    )
    assert job.json()["priority"] == "high" and job.json()["deadline"] is not None
    assert np.array_equal(result.as_numpy("predict"), stored_estimator(svc, "plain").predict(rows))


@pytest.mark.parametrize(
    ("parameters", "words"),
    [({"priority": "urgent"}, "parameter 'priority'"), ({"deadline_ms": 0}, "parameter 'deadline_ms'"),
     ({"alias": 3}, "parameter 'alias' must be a str")],
    ids=["priority", "deadline", "alias"],
)  # fmt: skip
def test_bad_parameters_are_a_400(api_server, tokens, svc, registered, parameters, words):
    before = count_jobs(svc)
    body = {"inputs": _plain_request(), "parameters": parameters}

    response = httpx.post(f"{api_server}/v2/models/plain/infer", json=body, headers=bearer(tokens["predict"]))

    assert response.status_code == 400 and words in response.json()["error"], response.text
    assert count_jobs(svc) == before
