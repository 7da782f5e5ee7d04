"""Worker pools (app/registry/pools.py) with real workers on two queues: a model put in a pool is
served only by that pool's worker, the default pool by the default worker; an unknown pool is a
422 that changes nothing; a pool with no worker keeps its jobs waiting, shown by /readyz and a
metric, until a worker can take them.

The workers here share a Redis DB of their own (TEST_POOLS_REDIS_URL, DB 9 of the test server
by default), so the session's worker never takes these models' rows.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import joblib
import pytest
from redis import Redis
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from app import create_app
from app.processes import PROCESSES
from tests.helpers import (
    REDIS_URL,
    bin_path,
    celery_worker,
    client_for,
    scrape_test_client,
    settings_env,
    wait_until_no_worker_holds,
)
from workers import sweeper

POOLS_REDIS_URL = os.environ.get("TEST_POOLS_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/9")
X, Y = make_classification(n_samples=300, n_features=4, random_state=1)


@pytest.fixture(scope="module")
def stack(settings, tokens, tmp_path_factory) -> Iterator[dict[str, Any]]:
    Redis.from_url(POOLS_REDIS_URL).flushdb()
    pool_settings = settings.replace(redis_url=POOLS_REDIS_URL, pools="heavy,idle")
    app = create_app(pool_settings)
    svc = app.extensions["predq"]
    directory = tmp_path_factory.mktemp("pools")
    model = LogisticRegression().fit(X, Y)
    joblib.dump(model, directory / "m.joblib")
    prefix = f"pool{uuid.uuid4().hex[:6]}"
    names = {"heavy": f"{prefix}-heavy", "default": f"{prefix}-default"}
    for name in names.values():
        svc.registry.register(name, directory / "m.joblib")
    logs = {}
    with ExitStack() as workers:
        for pool, queue in (("default", "inference"), ("heavy", "inference.heavy")):
            node = f"{pool}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
            argv = [bin_path(PROCESSES["worker"][0]), *PROCESSES["worker"][1:], "-c", "1", "-n", node]
            argv[argv.index("-Q") + 1] = queue
            # The heavy worker does not warm: it still reports its pool (every REPORT_SECONDS).
            warm = "0.3" if pool == "default" else "0"
            env = settings_env(pool_settings) | {
                "POOLS": "heavy,idle", "WARM_INTERVAL_SECONDS": warm, "WORKER_METRICS_BIND": ""
            }  # fmt: skip
            logs[pool] = directory / f"{pool}.log"
            workers.enter_context(celery_worker(app, argv, env, node, logs[pool]))
        yield {"app": app, "svc": svc, "client": client_for(app, tokens["admin"]), "names": names,
               "model": model, "logs": logs}  # fmt: skip


def test_a_model_in_a_pool_is_served_by_that_pools_worker_only(stack):
    client, names = stack["client"], stack["names"]
    moved = client.put(f"/v1/models/{names['heavy']}/pool", json={"pool": "heavy"})
    assert moved.status_code == 200 and moved.get_json()["pool"] == "heavy"
    refused = client.put(f"/v1/models/{names['heavy']}/pool", json={"pool": "nope"})
    assert refused.status_code == 422 and refused.get_json()["error"]["details"]["pools"] == [
        "default",
        "heavy",
        "idle",
    ]
    assert client.get(f"/v1/models/{names['heavy']}").get_json()["pool"] == "heavy", "a 422 changed nothing"
    assert client.get(f"/v1/models/{names['default']}").get_json()["pool"] == "default"

    for name in names.values():
        _predict(client, name, stack["model"], X[:3])
    for pool, name in names.items():  # a batch's line is written after its answer
        _until(lambda pool=pool, name=name: f'"model": "{name}"' in stack["logs"][pool].read_text())
    heavy_log, default_log = stack["logs"]["heavy"].read_text(), stack["logs"]["default"].read_text()
    assert f'"model": "{names["heavy"]}"' in heavy_log and f'"model": "{names["heavy"]}"' not in default_log
    assert (
        f'"model": "{names["default"]}"' in default_log and f'"model": "{names["default"]}"' not in heavy_log
    )


def test_a_pool_with_no_worker_keeps_its_jobs_waiting_and_says_so(stack):
    client, svc, name = stack["client"], stack["svc"], stack["names"]["heavy"]
    assert client.put(f"/v1/models/{name}/pool", json={"pool": "idle"}).status_code == 200
    wait_until_no_worker_holds(svc, name, 1)
    submitted = client.post(f"/v1/models/{name}/predictions", json={"inputs": X[10:12].round(3).tolist()})
    assert submitted.status_code == 202
    job_id = submitted.get_json()["id"]

    _until(lambda: client.get("/readyz").get_json().get("pools", {}).get("heavy") == "ok")
    ready = client.get("/readyz")
    assert ready.status_code == 200, "a pool without a worker does not make the API unready"
    assert ready.get_json()["pools"] == {"default": "ok", "heavy": "ok", "idle": "no worker"}
    samples = scrape_test_client(client)
    assert samples[("predq_pool_workers", frozenset({("pool", "idle")}))] == 0
    assert samples[("predq_pool_workers", frozenset({("pool", "heavy")}))] == 1
    time.sleep(2)
    assert client.get(f"/v1/predictions/{job_id}").get_json()["status"] == "queued", "no worker took it"

    # A worker for its pool, and the sweeper's wake-up (what beat runs) has it answered.
    assert client.put(f"/v1/models/{name}/pool", json={"pool": "heavy"}).status_code == 200
    assert sweeper.wake_workers(svc) >= 1
    done = client.get(f"/v1/predictions/{job_id}?wait=20").get_json()
    assert done["status"] == "succeeded"
    assert f'"model": "{name}"' not in stack["logs"]["default"].read_text()


def test_the_cli_puts_a_model_in_a_known_pool_only(stack):
    runner, name = stack["app"].test_cli_runner(), stack["names"]["default"]
    refused = runner.invoke(args=["models", "pool", name, "nope"])
    assert refused.exit_code != 0 and "POOLS" in refused.output
    assert stack["svc"].registry.describe(name)["pool"] == "default"
    done = runner.invoke(args=["models", "pool", name, "idle"])
    assert done.exit_code == 0 and "inference.idle" in done.output
    assert stack["svc"].registry.describe(name)["pool"] == "idle"
    runner.invoke(args=["models", "pool", name, "default"])
    assert stack["svc"].registry.describe(name)["pool"] == "default"


def _predict(client, name: str, model, rows) -> None:
    response = client.post(f"/v1/models/{name}/predictions?wait=20", json={"inputs": rows.round(3).tolist()})
    job = response.get_json()
    assert response.status_code == 200 and job["status"] == "succeeded", job
    expected = model.predict_proba(rows.round(3))
    for output, row in zip(job["outputs"], expected, strict=True):
        assert [output["probabilities"][str(c)] for c in model.classes_] == row.tolist()


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.1)
