"""A client generated from /openapi.json by openapi-python-client works against the real API.

The test generates it (into a temporary directory), imports it and calls it, as a team that
writes no client of its own would: a real API under granian, a real worker.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.helpers import expected_outputs, stored_estimator

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
PACKAGE = "predq_generated"


@pytest.fixture(scope="module")
def generated(api_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The generated package's modules: its client, the operations used here, its models."""
    where = tmp_path_factory.mktemp("generated-client")
    (where / "openapi.json").write_bytes(httpx.get(f"{api_server}/openapi.json").content)
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", str(where / "openapi.json"),
         "--output-path", str(where / PACKAGE), "--meta", "none"],
        env=dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sys.path.insert(0, str(where))
    try:
        modules = {
            name: importlib.import_module(f"{PACKAGE}.{name}")
            for name in ("client", "models", "api.predictions.submit_prediction",
                         "api.predictions.get_prediction", "api.models.get_model")
        }  # fmt: skip
        yield SimpleNamespace(**{name.rsplit(".", 1)[-1]: module for name, module in modules.items()})
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture
def api(generated: SimpleNamespace, api_server: str, tokens: dict[str, str]) -> Any:
    return generated.client.AuthenticatedClient(base_url=api_server, token=tokens["predict"])


def test_the_generated_client_submits_a_prediction_and_polls_it_to_the_model_s_outputs(
    generated: SimpleNamespace, api: Any, svc: Any, registered: Any, worker: Any
) -> None:
    body = generated.models.PredictionRequest(inputs=ROWS)

    submitted = generated.submit_prediction.sync(name="iris", client=api, body=body)
    job = submitted
    while job.status.value not in ("succeeded", "failed"):
        job = generated.get_prediction.sync(job_id=submitted.id, client=api, wait=5.0)

    assert isinstance(submitted, generated.models.Job), submitted
    assert job.status.value == "succeeded", job
    expected = expected_outputs(stored_estimator(svc, "iris"), ROWS)
    assert [output.to_dict() for output in job.outputs] == expected


def test_the_generated_client_reads_the_model_with_its_signature(
    generated: SimpleNamespace, api: Any, registered: Any
) -> None:
    model = generated.get_model.sync(name="iris", client=api)

    assert isinstance(model, generated.models.Model), model
    assert model.name == "iris"
    assert model.versions[0].signature["n_features"] == 4


def test_the_generated_client_gets_typed_errors(
    generated: SimpleNamespace, api: Any, registered: Any
) -> None:
    missing = generated.get_prediction.sync_detailed(job_id=str(uuid.uuid4()), client=api)
    too_wide = generated.submit_prediction.sync_detailed(
        name="iris", client=api, body=generated.models.PredictionRequest(inputs=[[1.0, 2.0, 3.0, 4.0, 5.0]])
    )

    assert missing.status_code == 404 and isinstance(missing.parsed, generated.models.Error), missing
    assert missing.parsed.error.code == "job_not_found"
    assert too_wide.status_code == 422 and isinstance(too_wide.parsed, generated.models.Error), too_wide
    assert too_wide.parsed.error.code == "invalid_input"
    assert too_wide.parsed.error.details["row"] == 0
