"""What /openapi.json says, and what schemathesis is told from it (tests/openapi_contract.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.openapi_contract import misfit, st_config

SUBMIT = "/v1/models/{name}/predictions"


@pytest.fixture(scope="module")
def document(app: Any) -> dict[str, Any]:
    return app.test_client().get("/openapi.json").json


@pytest.fixture(scope="module")
def iris_signature(svc: Any, registered: Any) -> dict[str, Any]:
    return svc.registry.resolve("iris").signature


def test_a_row_is_one_of_an_array_of_numbers_or_an_object_of_numbers_within_the_row_limit(document, settings):
    inputs = document["components"]["schemas"]["PredictionRequest"]["properties"]["inputs"]

    assert inputs["items"]["oneOf"] == [
        {"type": "array", "items": {"type": "number"}},
        {"type": "object", "additionalProperties": {"type": "number"}},
    ]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, settings.max_rows_per_request)


def test_schemathesis_accepts_from_a_valid_request_only_the_statuses_its_route_declares(document):
    config = st_config(document, {}, {"name": "iris"})
    accepted = {
        op["include-name"]: op["checks"]["positive_data_acceptance"]["expected-statuses"]
        for op in config["operations"]
    }

    assert accepted[f"POST {SUBMIT}"] == ["2xx", "404", "403", "409", "413", "422", "429", "503"]
    assert accepted["GET /v1/models"] == ["2xx", "404", "429", "503"], (
        "nothing but what every /v1 route can give"
    )
    assert accepted["GET /healthz"] == ["2xx", "404"]


def test_rows_that_fit_the_model_are_no_reason_of_the_model_s_to_refuse_them(iris_signature):
    """The run fails when submit refuses such rows 422: the check finds no reason of the model's."""
    names = iris_signature["feature_names"]

    assert misfit({"inputs": [[5.1, 3.5, 1.4, 0.2]]}, iris_signature) is None
    assert misfit({"inputs": [dict(zip(names, [5.1, 3.5, 1.4, 0.2], strict=True))]}, iris_signature) is None
    assert misfit({"inputs": [[1e30, 0, 0, 0]], "explain": True}, iris_signature) is None


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [[5.1, 3.5, 1.4]]},
        {"inputs": [{"colour": 1.0}]},
        {"inputs": [[5.1, 3.5e38, 1.4, 0.2]]},
    ],
    ids=["too narrow", "not its feature names", "beyond float32 for a forest"],
)
def test_rows_that_do_not_fit_the_model_are_a_reason_of_the_model_s(iris_signature, body):
    assert misfit(body, iris_signature) is not None
