"""The Python client (client/predq) and the `predq` command against a real server and worker."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import joblib
import pandas as pd
import predq
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import select

from app import create_app
from app.db import IdempotencyKey
from scripts.local import free_port
from tests.helpers import (
    API_SERVER_AUTH_CACHE_SECONDS,
    IRIS_FEATURES,
    bin_path,
    expected_outputs,
    insert_queued_job,
    iris_rows,
    settings_env,
    stored_estimator,
)
from tests.slow_model import MARKER, refuse_marked_rows

FAST = predq.Backoff(base=0.01, cap=0.05)


def iris_frame(n: int, seed: int | None) -> pd.DataFrame:
    """Iris rows as a DataFrame indexed by order number (1000, 1001, ...); no seed, fresh rows."""
    index = pd.RangeIndex(1000, 1000 + n, name="order")
    return pd.DataFrame(iris_rows(n, seed), columns=IRIS_FEATURES, index=index)


@pytest.fixture
def client(api_server, tokens):
    with predq.Client(api_server, tokens["predict"], timeout=60, backoff=FAST) as c:
        yield c


def test_a_dataframe_comes_back_aligned_to_its_index_and_equal_to_the_model(client, svc, registered, worker):
    frame = iris_frame(5000, seed=21)

    scored = client.predict("iris", frame)

    estimator = stored_estimator(svc, "iris")
    assert scored.index.equals(frame.index), "aligned to the input's index, in order"
    assert scored["prediction"].tolist() == estimator.predict(frame).tolist()
    proba = estimator.predict_proba(frame)
    for j, label in enumerate(estimator.classes_):
        assert scored[f"probability_{label}"].tolist() == proba[:, j].tolist()


def test_lists_arrays_and_the_async_client_give_the_models_outputs(
    api_server, tokens, client, svc, registered, worker
):
    rows = iris_frame(30, seed=22).to_numpy()
    expected = expected_outputs(stored_estimator(svc, "iris"), rows.tolist())

    async def with_async() -> list:
        async with predq.AsyncClient(api_server, tokens["predict"], backoff=FAST) as aclient:
            return await aclient.predict("iris", rows)

    assert client.predict("iris", rows) == expected
    assert client.predict("iris", rows.tolist()) == expected
    assert asyncio.run(with_async()) == expected
    jobs = [client.submit("iris", rows[i : i + 10]) for i in range(0, 30, 10)]
    assert [o for outputs in predq.wait_all(jobs) for o in outputs] == expected
    assert {job.id for job in predq.as_completed(jobs)} == {job.id for job in jobs}


def test_explanations_come_through_both_clients_in_requests_the_server_takes(
    api_server, tokens, svc, registered, worker, bulk_worker
):
    limit = svc.settings.explain_max_rows
    frame = iris_frame(limit + 20, seed=None)  # fresh rows: none cached
    estimator = stored_estimator(svc, "iris")
    classes = list(estimator.classes_)

    # It assumes twice the server's cap on explained rows: the server's 413 teaches it the cap.
    with predq.Client(api_server, tokens["predict"], backoff=FAST, max_explained_rows=2 * limit) as client:
        scored = client.predict("iris", frame, explain=True)
        assert (client.max_explained_rows, client.max_rows) == (limit, 1000), "plain requests keep their size"
        with pytest.raises(ValueError, match="explain"):
            client.submit("iris", frame.head(1), explain="every")

    assert scored.index.equals(frame.index)
    for row, (label, explanation) in zip(
        estimator.predict_proba(frame),
        scored[["prediction", "explanation"]].itertuples(index=False),
        strict=True,
    ):
        assert explanation["class"] == label
        total = explanation["base_value"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(row[classes.index(label)], abs=1e-6), "shap is additive"

    async def every_class() -> list:
        async with predq.AsyncClient(api_server, tokens["predict"], backoff=FAST) as aclient:
            return await aclient.predict("iris", frame.head(3).to_numpy(), explain="all")

    for output in asyncio.run(every_class()):
        assert list(output["explanation"]["by_class"]) == [str(c) for c in classes]


class DroppingProxy:
    """Relays HTTP to the server, but closes the client's connection instead of passing on
    the answer to the first POST (the server has accepted the job by then)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://").split(":")
        self.port = free_port()
        self.posts = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
        downstream, up = conn.makefile("rb"), upstream.makefile("rb")
        with conn, upstream:
            while (request := _message(downstream)) is not None:
                upstream.sendall(request)
                answer = _message(up)
                if request.startswith(b"POST"):
                    self.posts += 1
                    if self.posts == 1:
                        return  # the job is stored; the client never hears of it
                conn.sendall(answer or b"")


def _message(stream) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            return None
        head += line
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    return head + (stream.read(int(length.group(1))) if length else b"")


def test_a_dropped_connection_after_the_server_accepted_is_retried_into_the_same_job(
    api_server, tokens, svc, registered, worker, predict_key_id
):
    proxy = DroppingProxy(api_server)
    key = f"retry-{uuid.uuid4()}"
    rows = iris_frame(3, seed=23).to_numpy().tolist()

    with predq.Client(proxy.url, tokens["predict"], backoff=FAST) as through_proxy:
        job = through_proxy.submit("iris", rows, idempotency_key=key)
        outputs = job.result(timeout=30)

    assert proxy.posts == 2, "the first answer was dropped, so the client sent the submit again"
    with svc.engine.connect() as conn:
        stored = conn.execute(
            select(IdempotencyKey.job_id).where(IdempotencyKey.key == f"{predict_key_id}:{key}")
        ).scalars()
        assert [str(j) for j in stored] == [job.id], "one job, the one the first attempt created"
    assert outputs == expected_outputs(stored_estimator(svc, "iris"), rows)


def test_each_server_error_raises_its_class(
    api_server, tokens, client, svc, settings, registered, worker, tmp_path
):
    with pytest.raises(predq.InvalidInput) as bad_row:
        client.predict("iris", [[5.1, 3.5, 1.4, 0.2], [1.0, "x", 1.0, 1.0]])
    assert bad_row.value.row == 1 and bad_row.value.status == 422

    with pytest.raises(predq.NotFound):
        client.predict("no-such-model", [[1.0, 2.0, 3.0, 4.0]])

    key = f"conflict-{uuid.uuid4()}"
    client.submit("iris", [[5.0, 3.0, 1.0, 0.2]], idempotency_key=key)
    with pytest.raises(predq.Conflict):
        client.submit("iris", [[6.0, 3.0, 1.0, 0.2]], idempotency_key=key)

    with (
        predq.Client(api_server, "pq_made-up", backoff=FAST) as stranger,
        pytest.raises(predq.AuthError) as unknown,
    ):
        stranger.models()
    assert unknown.value.status == 401
    with pytest.raises(predq.AuthError) as lacking:
        client.promote("iris", 1)
    assert lacking.value.status == 403

    _, slow_token = svc.keys.create(
        f"one-a-minute-{uuid.uuid4().hex[:6]}", ["predict"], rate_limit="1/minute"
    )
    time.sleep(API_SERVER_AUTH_CACHE_SECONDS)  # until the server's processes know the new key
    with predq.Client(api_server, slow_token, timeout=1, backoff=FAST) as limited:
        limited.models()
        with pytest.raises(predq.RateLimited) as limited_error:
            limited.models()
    assert limited_error.value.retry_after > 1, "not retried past the deadline"

    full = create_app(settings.replace(max_queued_jobs=0))
    with (
        predq.Client(
            "http://full", tokens["predict"], timeout=1, backoff=FAST, transport=httpx.WSGITransport(app=full)
        ) as overloaded,
        pytest.raises(predq.Overloaded),
    ):
        overloaded.submit("iris", [[5.5, 2.5, 4.0, 1.3]])

    iris = load_iris(as_frame=True)
    picky = make_pipeline(FunctionTransformer(refuse_marked_rows), RandomForestClassifier(n_estimators=5))
    joblib.dump(picky.fit(iris.data, iris.target), tmp_path / "picky.joblib")
    name = f"picky-{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, tmp_path / "picky.joblib")
    with pytest.raises(predq.JobFailed) as failed:
        client.predict(name, [[MARKER, 3.0, 1.0, 0.2]])
    assert "marker" in failed.value.error["message"]


def test_a_deadline_is_kept_within_ten_percent(client, svc, registered, predict_key_id):
    job_id = str(insert_queued_job(svc, "iris", [[5.0, 3.0, 1.0, 0.2]], owner=predict_key_id))  # never queued

    tick = time.monotonic()
    with pytest.raises(predq.DeadlineExceeded):
        client.job(job_id).result(timeout=2.0)

    assert 1.8 <= time.monotonic() - tick <= 2.2


def test_score_file_writes_the_batch_jobs_result(client, svc, registered, bulk_worker, tmp_path):
    frame = iris_frame(2500, seed=24).reset_index()
    frame.to_parquet(tmp_path / "in.parquet")

    job = client.score_file(
        "iris", tmp_path / "in.parquet", tmp_path / "out.parquet", id_column="order", progress=False
    )

    assert job["status"] == "succeeded"
    result = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert result["order"].tolist() == frame["order"].tolist()
    assert (
        result["prediction"].tolist() == stored_estimator(svc, "iris").predict(frame[IRIS_FEATURES]).tolist()
    )


def test_the_predq_command(api_server, tokens, settings, svc, registered, worker, bulk_worker, tmp_path):
    env = settings_env(settings) | {"PREDQ_URL": api_server, "PREDQ_API_KEY": tokens["predict"]}
    rows = [[5.1, 3.5, 1.4, 0.2]]

    def predq_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [bin_path("predq"), *args], env=env, capture_output=True, text=True, timeout=120
        )

    predicted = predq_command("predict", "iris", "--json", json.dumps(rows))
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout) == expected_outputs(stored_estimator(svc, "iris"), rows)
    assert "iris" in {m["name"] for m in json.loads(predq_command("models").stdout)}
    missing = predq_command("predict", "no-such-model", "--json", json.dumps(rows))
    assert missing.returncode == 1 and "model_not_found" in missing.stderr

    iris_frame(1200, seed=25).to_csv(tmp_path / "in.csv", index=False)
    scored = predq_command("score", "iris", str(tmp_path / "in.csv"), str(tmp_path / "out.csv"), "--quiet")
    assert scored.returncode == 0, scored.stderr
    assert len(Path(tmp_path / "out.csv").read_text().splitlines()) == 1201
