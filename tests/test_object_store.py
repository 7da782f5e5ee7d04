"""ARTIFACT_ROOT and BATCH_ROOT on a real S3 server (moto's): artifacts uploaded once and
cached by sha256 on each worker host, batch jobs read, written and served from the bucket,
and an unreachable store or missing credentials answered clearly (never a 500)."""

from __future__ import annotations

import hashlib
import io
import socket
import time
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from app import create_app
from app.errors import ArtifactIntegrityError, StoreUnavailable
from app.lifecycle.compiling import compile_version
from app.registry.registry import Registry
from app.scoring import compiled
from app.storage import Artifacts, ObjectStore, S3Options
from scripts.local import free_port
from tests.helpers import (
    IRIS_FEATURES,
    celery_worker,
    client_for,
    expected_outputs,
    iris_rows,
    s3_client,
    settings_env,
    worker_argv,
)

PARQUET = "application/vnd.apache.parquet"


def _dead_endpoint() -> str:
    """An endpoint nothing listens on (a port bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    """The objects under ``prefix`` (less the empty "directory" markers pyarrow leaves)."""
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []) if not item["Key"].endswith("/"))


def _fresh_registry(
    svc, cache_dir: Path, endpoint: str | None = None, retry: float = 3.0, compiled_loader=None
) -> Registry:
    """A registry as a new worker host builds it: an empty disk cache of its own."""
    settings = svc.settings
    store = ObjectStore(settings.artifact_root, S3Options(endpoint or settings.s3_endpoint_url))
    return Registry(
        svc.engine, Artifacts(store, cache_dir, retry_seconds=retry), compiled_loader=compiled_loader
    )


@pytest.fixture(scope="module")
def s3_svc(s3_app):
    return s3_app.extensions["predq"]


@pytest.fixture(scope="module")
def s3_models(s3_svc, artifacts):
    return {name: s3_svc.registry.register(f"s3{name}", path) for name, path in artifacts.items()}


def test_an_artifact_is_uploaded_once_and_loaded_on_a_fresh_host_from_its_disk_cache(
    s3_svc, s3_models, s3_endpoint, s3_bucket, artifacts, tmp_path
):
    served = s3_models["iris"]
    assert f"artifacts/{served.artifact_path}" in _keys(s3_endpoint, s3_bucket, "artifacts/s3iris/")
    stored = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=f"artifacts/{served.artifact_path}")
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == served.sha256
    rows = iris_rows(20, seed=1)
    expected = joblib.load(artifacts["iris"]).predict_proba(rows)

    host = _fresh_registry(s3_svc, tmp_path / "cache")
    estimator, _ = host.load("s3iris", served.version)

    assert np.array_equal(estimator.predict_proba(rows), expected)
    assert host.artifacts.cached_digests() == [served.sha256]
    # The same host restarted with the store unreachable: the cached copy serves.
    offline = _fresh_registry(s3_svc, tmp_path / "cache", endpoint=_dead_endpoint(), retry=0.5)
    assert np.array_equal(offline.load("s3iris", served.version)[0].predict_proba(rows), expected)


def test_a_compiled_version_s_onnx_artifact_goes_through_the_same_store_and_cache(
    s3_svc, s3_endpoint, s3_bucket, tmp_path
):
    X, y = make_classification(n_samples=1500, n_features=8, n_informative=5, random_state=0)
    joblib.dump(RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y), tmp_path / "forest.joblib")
    served = s3_svc.registry.register("s3compiled", tmp_path / "forest.joblib", reference=X[:500])

    record = compile_version(s3_svc, "s3compiled", served.version)

    assert record["status"] == "serving", record.get("reason")
    assert f"artifacts/{record['artifact_path']}" in _keys(s3_endpoint, s3_bucket, "artifacts/s3compiled/")
    host = _fresh_registry(s3_svc, tmp_path / "cache", compiled_loader=compiled.load)
    loaded = host.loaded("s3compiled", served.version)
    assert isinstance(loaded.compiled, compiled.CompiledModel)
    assert set(host.artifacts.cached_digests()) == {served.sha256, record["sha256"]}


def test_bytes_in_the_store_unlike_the_registry_sha256_are_refused_and_never_cached(
    s3_svc, artifacts, s3_endpoint, s3_bucket, tmp_path
):
    served = s3_svc.registry.register("s3tampered", artifacts["diabetes"])
    s3_client(s3_endpoint).put_object(
        Bucket=s3_bucket, Key=f"artifacts/{served.artifact_path}", Body=artifacts["iris"].read_bytes()
    )
    host = _fresh_registry(s3_svc, tmp_path / "cache")

    with pytest.raises(ArtifactIntegrityError) as refused:
        host.load("s3tampered", served.version)

    assert refused.value.code == "artifact_integrity_error"
    assert host.artifacts.cached_digests() == []


def test_a_cached_file_that_changed_on_disk_is_fetched_again(s3_svc, s3_models, tmp_path):
    served = s3_models["diabetes"]
    _fresh_registry(s3_svc, tmp_path / "cache").load("s3diabetes", served.version)
    (tmp_path / "cache" / served.sha256).write_bytes(b"not the model")

    estimator, _ = _fresh_registry(s3_svc, tmp_path / "cache").load("s3diabetes", served.version)

    assert hasattr(estimator, "predict")
    assert hashlib.sha256((tmp_path / "cache" / served.sha256).read_bytes()).hexdigest() == served.sha256


def test_the_disk_cache_keeps_within_its_bytes_deleting_the_least_recently_used(s3_svc, s3_models, tmp_path):
    store = s3_svc.registry.artifacts.store
    sizes = {name: store.size(served.artifact_path) for name, served in s3_models.items()}
    budget = sizes["iris"] + sizes["diabetes"] + sizes["plain"] - 1  # all three do not fit
    cache = Artifacts(store, tmp_path / "cache", cache_bytes=budget)
    for name in ("plain", "diabetes"):
        cache.fetch(s3_models[name].artifact_path, s3_models[name].sha256)
        time.sleep(0.05)
    cache.fetch(s3_models["plain"].artifact_path, s3_models["plain"].sha256)  # used again: now newest
    time.sleep(0.05)

    cache.fetch(s3_models["iris"].artifact_path, s3_models["iris"].sha256)

    held = set(cache.cached_digests())
    assert held == {s3_models["plain"].sha256, s3_models["iris"].sha256}, "diabetes was least recently used"


def test_a_version_that_must_be_fetched_from_an_unreachable_store_fails_after_the_retry_time(
    s3_svc, s3_models, tmp_path
):
    host = _fresh_registry(s3_svc, tmp_path / "cache", endpoint=_dead_endpoint(), retry=1.5)
    tick = time.monotonic()

    with pytest.raises(StoreUnavailable) as down:
        host.load("s3plain", s3_models["plain"].version)

    assert time.monotonic() - tick >= 1.5, "it waited and retried first"
    assert down.value.code == "store_unavailable" and "STORE_RETRY_SECONDS" in down.value.message


# -- batch jobs on the store ----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_bulk_worker(s3_settings, s3_app, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("s3-bulk") / "bulk.log"
    name = f"s3bulk-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = worker_argv("bulk", name, 2)
    env = settings_env(s3_settings) | {
        "WORKER_METRICS_BIND": f"127.0.0.1:{free_port()}",
        "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("s3-bulk-cache")),
    }
    with celery_worker(s3_app, argv, env, name, log_path):
        yield log_path


def _parquet(rows: np.ndarray) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(dict(zip(IRIS_FEATURES, rows.T, strict=True))), sink)
    return sink.getvalue()


def _finished(client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/batch-jobs/{job_id}").json
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"batch job {job_id} did not finish: {job}")


def test_a_batch_job_on_s3_reads_writes_and_streams_its_files_from_the_bucket(
    s3_app, s3_svc, s3_tokens, s3_models, s3_bulk_worker, s3_endpoint, s3_bucket, artifacts
):
    client = client_for(s3_app, s3_tokens["predict"])
    rows = iris_rows(3500, seed=7, decimals=2)

    submitted = client.post("/v1/models/s3iris/batch-jobs", data=_parquet(rows), content_type=PARQUET)
    assert submitted.status_code == 202, submitted.json
    job = _finished(client, submitted.json["id"])
    result = client.get(f"/v1/batch-jobs/{job['id']}/result")

    assert job["status"] == "succeeded" and job["chunks"]["total"] == 4
    assert result.status_code == 200 and result.headers["Content-Length"] == str(len(result.data))
    table = pq.read_table(io.BytesIO(result.data))
    assert table.column("row").to_pylist() == list(range(3500)), "every row, in order"
    expected = joblib.load(artifacts["iris"]).predict(rows)
    assert table.column("prediction").to_pylist() == expected.tolist()
    assert _keys(s3_endpoint, s3_bucket, f"batches/{job['id']}/") == [f"batches/{job['id']}/result.parquet"]
    assert not Path(s3_svc.settings.var_dir, "batches").exists(), "nothing of the job on local disk"


def test_a_result_on_s3_redirects_to_a_presigned_url_when_asked(
    s3_settings, s3_tokens, s3_models, s3_bulk_worker, s3_app
):
    client = client_for(s3_app, s3_tokens["predict"])
    submitted = client.post(
        "/v1/models/s3iris/batch-jobs", data=_parquet(iris_rows(1200, seed=3)), content_type=PARQUET
    )
    job = _finished(client, submitted.json["id"])
    streamed = client.get(f"/v1/batch-jobs/{job['id']}/result").data

    presigning = client_for(
        create_app(s3_settings.replace(batch_presigned_results=True)), s3_tokens["predict"]
    )
    redirect = presigning.get(f"/v1/batch-jobs/{job['id']}/result")
    public = client_for(
        create_app(
            s3_settings.replace(batch_presigned_results=True, s3_public_endpoint="https://files.example.org")
        ),
        s3_tokens["predict"],
    ).get(f"/v1/batch-jobs/{job['id']}/result")

    assert redirect.status_code == 302
    assert httpx.get(redirect.headers["Location"]).content == streamed, "the URL works, unauthenticated"
    assert public.status_code == 302 and public.headers["Location"].startswith("https://files.example.org/")
    assert "X-Amz-Signature=" in public.headers["Location"]


# -- the store down ---------------------------------------------------------------------------


def test_an_unreachable_store_is_named_by_readyz_and_batch_submits_get_503(s3_settings, s3_tokens, s3_models):
    down = create_app(s3_settings.replace(s3_endpoint_url=_dead_endpoint()))
    client = client_for(down, s3_tokens["predict"])

    ready = down.test_client().get("/readyz")
    submitted = client.post(
        "/v1/models/s3iris/batch-jobs", data=_parquet(iris_rows(10, seed=1)), content_type=PARQUET
    )

    assert ready.status_code == 503 and "store" in ready.json["down"], ready.json
    assert "unreachable" in ready.json["checks"]["store"]
    assert submitted.status_code == 503 and submitted.headers["Retry-After"], submitted.json
    assert submitted.json["error"]["code"] == "store_unavailable"


def test_missing_credentials_are_named_by_readyz_and_batch_submits_get_503(
    s3_settings, s3_tokens, s3_models, monkeypatch, tmp_path
):
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    app = create_app(s3_settings)
    client = client_for(app, s3_tokens["predict"])

    ready = app.test_client().get("/readyz")
    submitted = client.post(
        "/v1/models/s3iris/batch-jobs", data=_parquet(iris_rows(10, seed=1)), content_type=PARQUET
    )

    assert ready.status_code == 503 and "no S3 credentials" in ready.json["checks"]["store"], ready.json
    assert submitted.status_code == 503 and submitted.json["error"]["code"] == "store_unavailable"
    assert "AWS_ACCESS_KEY_ID" in submitted.json["error"]["message"]


def test_a_worker_cut_off_from_the_store_serves_what_it_cached_and_fails_the_rest_after_retrying(
    s3_app, s3_svc, s3_settings, s3_tokens, s3_models, artifacts, tmp_path
):
    cold = s3_svc.registry.register("s3cold", artifacts["diabetes"])
    warm = s3_models["plain"]
    cache = tmp_path / "host-cache"
    Artifacts(s3_svc.registry.artifacts.store, cache).fetch(warm.artifact_path, warm.sha256)
    name = f"cutoff-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = worker_argv("inference", name, 1)
    env = settings_env(s3_settings) | {
        "S3_ENDPOINT_URL": _dead_endpoint(), "MODEL_CACHE_DIR": str(cache), "STORE_RETRY_SECONDS": "2",
        "WARM_INTERVAL_SECONDS": "0", "WORKER_METRICS_BIND": f"127.0.0.1:{free_port()}",
    }  # fmt: skip
    client = client_for(s3_app, s3_tokens["predict"])
    rows = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    diabetes_rows = [[0.01 * (i + j) for j in range(10)] for i in range(2)]

    with celery_worker(s3_app, argv, env, name, tmp_path / "worker.log"):
        served = client.post("/v1/models/s3plain/predictions?wait=20", json={"inputs": rows}).json
        tick = time.monotonic()
        failed = client.post("/v1/models/s3cold/predictions?wait=25", json={"inputs": diabetes_rows}).json
        waited = time.monotonic() - tick

    assert served["status"] == "succeeded", served
    assert served["outputs"] == expected_outputs(joblib.load(artifacts["plain"]), rows)
    assert failed["status"] == "failed" and failed["error"]["code"] == "store_unavailable", failed
    assert waited >= 2.0, "the worker retried for STORE_RETRY_SECONDS before failing the job"
    assert cold.sha256 not in Artifacts(s3_svc.registry.artifacts.store, cache).cached_digests()
