"""schemathesis' own command, ``st run --checks all``, against a real predq: the document tells the truth.

Every stateless phase (examples, coverage, fuzzing; positive and negative cases) runs with
every check (no 5xx, statuses, content types, headers and bodies as documented, schema-valid
requests accepted, schema-invalid ones refused, 405 with Allow, auth enforced) plus ours
(tests/openapi_contract.py: a refused row must not fit its model). The stack is its own: a
database and Redis DB of its own, the API under granian, a worker taking every queue, an admin
key; a registered model, a stored job, a finished batch job and an import give the path
parameters values that exist, so every operation is reached beyond its 404.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from sklearn.datasets import load_iris

from app import create_app
from app.config import Settings
from app.db import utcnow
from app.lifecycle.training_data import import_examples
from app.migrate import upgrade
from app.processes import PROCESSES
from app.webhooks import outbox
from scripts.local import ROOT, free_port, process_group, scratch_database, wait_for_http
from tests.helpers import ADMIN_URL, FUZZ_CASES, FUZZ_STATUSES, REDIS_URL, celery_worker, settings_env
from tests.openapi_contract import st_config, to_toml

# A Redis DB of its own (flushed); TEST_FUZZ_REDIS_URL lets runs side by side pick others.
FUZZ_REDIS_URL = os.environ.get("TEST_FUZZ_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/12")
MODEL = "fuzz"
#: Cases per operation and phase (schemathesis' default is 100): ~2,000 cases in all.
MAX_EXAMPLES = 60


@pytest.fixture(scope="module")
def fuzz_stack(
    artifacts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A running predq of its own, and values for the document's path parameters that exist."""
    Redis.from_url(FUZZ_REDIS_URL).flushdb()
    inputs = tmp_path_factory.mktemp("fuzz-inputs")
    iris = load_iris(as_frame=True)
    iris.data.to_csv(inputs / "rows.csv", index=False)
    with scratch_database(ADMIN_URL, "predq_fuzz") as url:
        upgrade(url)
        settings = Settings(
            database_url=url,
            redis_url=FUZZ_REDIS_URL,
            artifact_root=str(tmp_path_factory.mktemp("fuzz-artifacts")),
            batch_root=str(tmp_path_factory.mktemp("fuzz-batches")),
            batch_input_root=str(inputs),
            rate_limit="100000/second",
            # schemathesis sends a made-up key to every operation (auth must refuse it 401); past
            # AUTH_FAILURE_LIMIT from one address those get 429, a limit this run is not about.
            auth_failure_limit="100000/minute",
            # Generated ?wait=S would hold each case up to S seconds.
            max_wait_seconds=0.5,
        )
        app = create_app(settings)
        svc = app.extensions["predq"]
        svc.registry.register(MODEL, artifacts["iris"], reference=iris.data)
        labeled = iris.frame.sample(frac=1.0, random_state=0)
        import_id = import_examples(svc, MODEL, labeled, "target", source="fuzz")["id"]
        token = svc.keys.create("fuzzer", ["admin"])[1]
        env = settings_env(settings) | {"BATCH_INPUT_ROOT": str(inputs), "MAX_WAIT_SECONDS": "0.5",
                                        "AUTH_FAILURE_LIMIT": settings.auth_failure_limit}  # fmt: skip
        with _stack(app, env, tmp_path_factory) as base:
            values = _existing(base, token, iris.data) | {"name": MODEL, "version": 1, "alias": "champion",
                                                          "import_id": import_id, "batch_file": "rows.csv"}  # fmt: skip
            values |= _webhook(svc, base, token, values["job_id"])
            yield {"url": base, "token": token, "values": values, "logs": tmp_path_factory.getbasetemp()}
        svc.engine.dispose()
    Redis.from_url(FUZZ_REDIS_URL).flushdb()


@contextlib.contextmanager
def _stack(app: Any, env: dict[str, str], tmp: pytest.TempPathFactory) -> Iterator[str]:
    """The API (granian, 2 processes) and a worker taking every queue; yields the API's URL."""
    port = free_port()
    api_env = env | {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "API_THREADS": "16"}
    name = f"fuzz-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    worker = [str(Path(sys.executable).parent / "celery"), *PROCESSES["worker"][1:5], "-Q",
              "inference,maintenance,training,bulk,explain", "-c", "2", "-n", name]  # fmt: skip
    log = tmp.getbasetemp()
    with process_group([sys.executable, "-m", "app.serve"], api_env, log / "fuzz-api.log") as api:
        with celery_worker(app, worker, env, name, log / "fuzz-worker.log"):
            wait_for_http(f"http://127.0.0.1:{port}/healthz", [api], timeout=90)
            yield f"http://127.0.0.1:{port}"


def _webhook(svc: Any, base: str, token: str, job_id: str) -> dict[str, str]:
    """An endpoint registered through the API, and a delivery of it in the outbox."""
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{base}/v1/webhooks", headers=auth, timeout=30,
                         json={"url": "https://example.com/hook", "events": ["prediction.succeeded"]})  # fmt: skip
    assert created.status_code == 201, created.text
    endpoint = uuid.UUID(created.json()["id"])
    row = outbox.delivery(
        "prediction.succeeded", job_id, "https://example.com/hook", utcnow(), endpoint_id=endpoint
    )
    with svc.engine.begin() as conn:
        outbox.write(conn, [row])
    return {"webhook_id": str(endpoint), "delivery_id": f"msg_{row['id'].hex}"}


def _existing(base: str, token: str, rows: Any) -> dict[str, Any]:
    """A succeeded job and a finished batch job, made through the API."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
        job = http.post(
            f"/v1/models/{MODEL}/predictions?wait=0.5", json={"inputs": rows.head(3).values.tolist()}
        )
        batch = http.post(f"/v1/models/{MODEL}/batch-jobs", json={"path": "rows.csv"})
        assert job.status_code in (200, 202) and batch.status_code == 202, (job.text, batch.text)
        deadline = time.monotonic() + 60
        while {http.get(f"/v1/predictions/{job.json()['id']}").json()["status"],
               http.get(f"/v1/batch-jobs/{batch.json()['id']}").json()["status"]} != {"succeeded"}:  # fmt: skip
            assert time.monotonic() < deadline, "the job and the batch job did not finish"
            time.sleep(0.2)
    return {"job_id": job.json()["id"], "batch_job_id": batch.json()["id"]}


@pytest.fixture(scope="module")
def st_run(fuzz_stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``st run --checks all`` over the whole document; its output and the statuses per operation."""
    here = tmp_path_factory.mktemp("schemathesis")
    document = httpx.get(f"{fuzz_stack['url']}/openapi.json").json()
    headers = {"Authorization": f"Bearer {fuzz_stack['token']}"}
    (here / "schemathesis.toml").write_text(to_toml(st_config(document, headers, fuzz_stack["values"])))
    report = here / "events.ndjson"
    argv = [str(Path(sys.executable).parent / "st"), "--config-file", str(here / "schemathesis.toml"), "run",
            f"{fuzz_stack['url']}/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(MAX_EXAMPLES), "--generation-database", "none", "--no-color",
            "--report", "ndjson", "--report-ndjson-path", str(report)]  # fmt: skip
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.openapi_contract", PYTHONPATH=str(ROOT))
    done = subprocess.run(argv, cwd=here, env=env, capture_output=True, text=True, timeout=600)
    statuses = _statuses(report)
    for operation, seen in statuses.items():
        FUZZ_CASES[operation] += sum(seen.values())
        FUZZ_STATUSES.update(seen)
    return {"returncode": done.returncode, "output": done.stdout + done.stderr, "statuses": statuses,
            "operations": _operations(document)}  # fmt: skip


def _statuses(report: Path) -> dict[str, Counter[int]]:
    seen: dict[str, Counter[int]] = {}
    for line in report.read_text().splitlines():
        ((kind, event),) = json.loads(line).items()
        if kind != "ScenarioFinished":
            continue
        recorder = event.get("recorder", {})
        for interaction in recorder.get("interactions", {}).values():
            method = interaction["request"]["method"]
            label = recorder["label"]
            if label.split(" ", 1)[0] != method:  # a probe with a method the route lacks (TRACE, ...)
                label = "(a method the route lacks)"
            status = (interaction.get("response") or {}).get("status_code")
            if status is not None:
                seen.setdefault(label, Counter())[status] += 1
    return seen


def _operations(document: dict[str, Any]) -> list[str]:
    return [f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item if m != "parameters"]


def test_schemathesis_with_every_check_finds_no_failure(st_run: dict[str, Any]) -> None:
    assert st_run["returncode"] == 0, st_run["output"][-8000:]


def test_every_operation_is_reached_beyond_its_404(st_run: dict[str, Any]) -> None:
    """Each operation got at least one answer that its own logic gave (2xx, or a 4xx of its
    checks): not only 404s for ids that do not exist, nor only the routing's 405s."""
    statuses = st_run["statuses"]
    unreached = [
        operation
        for operation in st_run["operations"]
        if not any(s < 500 and s not in (401, 404, 405) for s in statuses.get(operation, {}))
    ]
    assert len(st_run["operations"]) >= 25
    assert not unreached, {op: dict(statuses.get(op, {})) for op in unreached}
