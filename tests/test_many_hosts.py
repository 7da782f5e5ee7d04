"""Two worker "hosts" on this machine, sharing nothing but the S3 server, PostgreSQL and Redis.

Each host is a Celery worker (online and bulk queues) with a VAR_DIR and a MODEL_CACHE_DIR
of its own, empty at the start; ARTIFACT_ROOT and BATCH_ROOT are on the S3 server, so
neither host can read a file of the other. One API (this process's app) registers and
routes; the hosts fetch what they need from the bucket.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import socket
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from scripts.local import free_port, process_group
from tests.helpers import (
    IRIS_FEATURES,
    client_for,
    expected_outputs,
    iris_rows,
    settings_env,
    worker_argv,
)
from tests.slow_model import slow_identity
from workers.bulk import requeue_stuck_chunks

PARQUET = "application/vnd.apache.parquet"
HOSTS = ("host-a", "host-b")


@pytest.fixture(scope="module")
def hosts(s3_settings, s3_app, tmp_path_factory):
    """Two worker hosts; yields {name: (process, its MODEL_CACHE_DIR, its log)}."""
    started = {}
    with ExitStack() as stack:
        for host in HOSTS:
            home = tmp_path_factory.mktemp(host)
            node = f"{host}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
            argv = worker_argv("inference,bulk", node, 1)
            env = settings_env(s3_settings) | {
                "VAR_DIR": str(home / "var"), "MODEL_CACHE_DIR": str(home / "cache"), "WARM_INTERVAL_SECONDS": "1",
                "WORKER_METRICS_BIND": f"127.0.0.1:{free_port()}",
            }  # fmt: skip
            proc = stack.enter_context(process_group(argv, env, home / "worker.log"))
            started[host] = (proc, home / "cache", home / "worker.log", node)
        deadline = time.monotonic() + 90
        for proc, _, log, node in started.values():
            while not s3_app.extensions["celery"].control.ping(destination=[node], timeout=0.5):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        yield started


def _held(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if not p.name.startswith(".")} if cache.is_dir() else set()


def test_a_model_registered_through_the_api_is_served_by_both_hosts(s3_app, s3_tokens, hosts, artifacts):
    client = client_for(s3_app, s3_tokens["predict"])
    served = s3_app.extensions["predq"].registry.register("twohosts", artifacts["iris"])
    deadline = time.monotonic() + 60
    while not all(served.sha256 in _held(cache) for _, cache, _, _ in hosts.values()):
        assert time.monotonic() < deadline, "each host fetches the version into its own cache"
        time.sleep(0.5)
    rows = iris_rows(30, seed=11).tolist()

    answers = [
        client.post("/v1/models/twohosts/predictions?wait=20", json={"inputs": [row]}).json for row in rows
    ]

    model = joblib.load(artifacts["iris"])
    assert [a["status"] for a in answers] == ["succeeded"] * len(rows)
    assert [a["outputs"][0] for a in answers] == expected_outputs(model, rows)


def test_a_batch_job_is_split_between_hosts_and_survives_one_killed_mid_job(
    s3_app, s3_settings, s3_tokens, hosts, tmp_path
):
    X, y = iris_rows(600, seed=2), np.arange(600) % 3
    slow = make_pipeline(
        FunctionTransformer(slow_identity), RandomForestClassifier(n_estimators=10, random_state=0)
    )
    joblib.dump(slow.fit(X, y), tmp_path / "slow.joblib")
    svc = s3_app.extensions["predq"]
    svc.registry.register("slowhosts", tmp_path / "slow.joblib")
    rows = iris_rows(12_000, seed=4, decimals=2)
    sink = io.BytesIO()
    pq.write_table(pa.table(dict(zip(IRIS_FEATURES, rows.T, strict=True))), sink)
    client = client_for(s3_app, s3_tokens["predict"])

    job = client.post("/v1/models/slowhosts/batch-jobs", data=sink.getvalue(), content_type=PARQUET).json
    while client.get(f"/v1/batch-jobs/{job['id']}").json["chunks"]["succeeded"] < 2:
        time.sleep(0.1)
    victim, _, _, _ = hosts["host-a"]
    os.killpg(victim.pid, signal.SIGKILL)  # the whole host: its main process and its pool
    impatient = dataclasses.replace(svc, settings=s3_settings.replace(bulk_chunk_timeout_seconds=4))
    deadline = time.monotonic() + 300
    # Generous: on a loaded 2-core machine one status read has taken over a minute.
    while (view := client.get(f"/v1/batch-jobs/{job['id']}").json)["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, view
        requeue_stuck_chunks(impatient)  # the sweeper, as beat runs it
        time.sleep(1)

    assert view["status"] == "succeeded" and view["chunks"]["succeeded"] == 12, view
    result = pq.read_table(io.BytesIO(client.get(f"/v1/batch-jobs/{job['id']}/result").data))
    assert result.column("row").to_pylist() == list(range(12_000)), "every row once, in order"
    assert result.column("prediction").to_pylist() == slow.predict(rows).tolist()
    scored = {host: log.read_text().count("score_chunk") for host, (_, _, log, _) in hosts.items()}
    assert all(scored.values()), f"both hosts took chunks: {scored}"
