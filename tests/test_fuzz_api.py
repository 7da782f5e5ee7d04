"""Schemathesis against /openapi.json: every generated request gets an answer, never a 500.

It runs on a database and Redis DB of its own, with an admin key, so the cases it
generates (aliases moved, jobs stored) cannot disturb the other tests. Prediction cases
target a real model, so request bodies reach the real validation path rather than a 404.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from redis import Redis
from schemathesis import GenerationMode

from app import create_app
from app.config import Settings
from app.migrate import upgrade
from scripts.local import scratch_database
from tests.helpers import ADMIN_URL, FUZZ_CASES, FUZZ_STATUSES, REDIS_URL, bearer

# A Redis DB of its own (the fuzzer flushes it); TEST_FUZZ_REDIS_URL lets runs side by side pick others.
FUZZ_REDIS_URL = os.environ.get("TEST_FUZZ_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/12")
MODEL = "fuzz"


@pytest.fixture(scope="module")
def fuzz_app(artifacts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    Redis.from_url(FUZZ_REDIS_URL).flushdb()
    with scratch_database(ADMIN_URL, "predq_fuzz") as url:
        upgrade(url)
        app = create_app(
            Settings(
                database_url=url,
                redis_url=FUZZ_REDIS_URL,
                artifact_root=str(tmp_path_factory.mktemp("fuzz-artifacts")),
                batch_root=str(tmp_path_factory.mktemp("fuzz-batches")),
                rate_limit="100000/second",
                # No worker drains this Redis DB: keep generated ?wait=S from holding each case.
                max_wait_seconds=0.1,
                extra={"TESTING": True},
            )
        )
        svc = app.extensions["predq"]
        svc.registry.register(MODEL, artifacts["iris"])
        yield app
        svc.engine.dispose()
    Redis.from_url(FUZZ_REDIS_URL).flushdb()


@pytest.fixture(scope="module")
def fuzz_token(fuzz_app: Any) -> str:
    return fuzz_app.extensions["predq"].keys.create("fuzzer", ["admin"])[1]


def test_no_generated_request_gets_a_server_error(fuzz_app: Any, fuzz_token: str) -> None:
    # Driven by hand rather than schemathesis' pytest plugin, which does not run under pytest 9.2.
    # /readyz answers 503 here by design (no worker on this Redis DB), after a 1 s ping.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app).exclude(path="/readyz")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6

    # Positive cases follow the schema; negative ones break it on purpose.
    for operation, mode in itertools.product(operations, list(GenerationMode)):
        try:
            fuzz(operation, mode, fuzz_token)
        except Unsatisfiable:
            # An operation without parameters or body (GET /v1/models) has nothing to break.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert sum(FUZZ_CASES.values()) >= 300


def fuzz(operation: Any, mode: GenerationMode, token: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case: Any) -> None:
        if case.method == "POST" and "name" in (case.path_parameters or {}):
            case.path_parameters["name"] = MODEL
        response = case.call(headers=bearer(token))
        FUZZ_CASES[f"{case.method} {case.path} ({mode.value})"] += 1
        FUZZ_STATUSES[response.status_code] += 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
        # schemathesis gives header values as lists, keyed in lower case.
        content_type = response.headers.get("content-type", [""])[0]
        expected = "text/plain" if case.path == "/metrics" else "application/json"  # Prometheus' format
        assert content_type.startswith(expected), f"{response.status_code} {response.text[:200]}"

    no_server_error()
