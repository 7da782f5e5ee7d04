"""The registry CLI: versions, sha256, signatures, champion alias, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
import pytest
from sklearn.ensemble import RandomForestClassifier

from app.errors import ArtifactIntegrityError


def test_register_and_list_through_the_cli(app, svc, artifacts):
    runner = app.test_cli_runner()

    first = runner.invoke(
        args=["models", "register", "--name", "cli-model", "--file", str(artifacts["iris"])]
    )
    second = runner.invoke(
        args=[
            "models",
            "register",
            "--name",
            "cli-model",
            "--file",
            str(artifacts["iris"]),
            "--alias",
            "challenger",
        ]
    )
    listing = runner.invoke(args=["models", "list"])

    assert first.exit_code == 0, first.output
    assert "cli-model v1" in first.output and "cli-model v2" in second.output
    described = svc.registry.describe("cli-model")
    assert described["aliases"] == {"champion": 1, "challenger": 2}
    v1 = described["versions"][0]
    assert v1["sha256"] == hashlib.sha256(artifacts["iris"].read_bytes()).hexdigest()
    assert v1["signature"]["n_features"] == 4
    assert v1["signature"]["feature_names"] == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    assert v1["signature"]["task"] == "classification"
    assert v1["signature"]["classes"] == [0, 1, 2]
    assert v1["created_at"] is not None
    assert "cli-model" in listing.output and "champion" in listing.output and "challenger" in listing.output


def test_regressor_signature(svc, registered):
    signature = svc.registry.describe("diabetes")["versions"][0]["signature"]
    assert signature["task"] == "regression"
    assert signature["classes"] is None and signature["has_proba"] is False
    assert signature["n_features"] == 10
    assert svc.registry.describe("plain")["versions"][0]["signature"]["feature_names"] is None


def test_unfitted_estimator_is_refused(app, tmp_path):
    path = tmp_path / "unfitted.joblib"
    joblib.dump(RandomForestClassifier(), path)

    result = app.test_cli_runner().invoke(
        args=["models", "register", "--name", "unfitted", "--file", str(path)]
    )

    assert result.exit_code != 0
    assert "not fitted" in result.output


def test_not_a_model_is_refused(app, tmp_path):
    path = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2]}, path)
    result = app.test_cli_runner().invoke(
        args=["models", "register", "--name", "notamodel", "--file", str(path)]
    )
    assert result.exit_code != 0
    assert "no predict()" in result.output


def test_load_refuses_a_changed_artifact(svc, artifacts):
    served = svc.registry.register("integrity", artifacts["diabetes"])
    assert svc.registry.load("integrity", served.version)[0] is not None
    svc.registry.memory.discard(("integrity", served.version))  # a fresh process would read the file again
    (Path(svc.settings.artifact_root) / served.artifact_path).write_bytes(artifacts["iris"].read_bytes())

    with pytest.raises(ArtifactIntegrityError):
        svc.registry.load("integrity", served.version)


def test_models_endpoints(client, registered):
    listing = client.get("/v1/models").json["models"]
    assert {"iris", "diabetes", "plain"} <= {m["name"] for m in listing}
    iris = client.get("/v1/models/iris").json
    assert iris["aliases"]["champion"] == 1
    assert iris["versions"][0]["signature"]["task"] == "classification"
    assert len(iris["versions"][0]["sha256"]) == 64
    assert iris["traffic_policy"]


def test_promote_moves_an_alias_and_requests_follow(app, svc, artifacts, client):
    svc.registry.register("promoted", artifacts["diabetes"])
    svc.registry.register("promoted", artifacts["diabetes"])
    runner = app.test_cli_runner()

    result = runner.invoke(args=["models", "promote", "promoted", "2"])
    missing = runner.invoke(args=["models", "promote", "promoted", "7"])

    assert result.exit_code == 0, result.output
    assert svc.registry.describe("promoted")["aliases"]["champion"] == 2
    assert svc.registry.resolve("promoted").version == 2
    assert missing.exit_code != 0 and "no version 7" in missing.output


def test_a_model_is_loaded_once_per_process(svc, artifacts):
    served = svc.registry.register("loaded-once", artifacts["iris"])
    first, _ = svc.registry.load("loaded-once", served.version)
    second, _ = svc.registry.load("loaded-once", served.version)
    assert first is second


def test_another_process_sees_a_promotion_within_its_cache_ttl(svc, artifacts):
    """Each API process caches alias lookups for REGISTRY_CACHE_SECONDS; then it re-reads."""
    import time

    from app.registry.registry import Registry

    svc.registry.register("ttl", artifacts["iris"])
    svc.registry.register("ttl", artifacts["iris"])
    other_process = Registry(svc.engine, svc.settings.artifact_root, cache_seconds=1.0)
    assert other_process.resolve("ttl").version == 1

    svc.registry.set_alias("ttl", "champion", 2)

    assert other_process.resolve("ttl").version == 1, "still its cached answer"
    time.sleep(1.1)
    assert other_process.resolve("ttl").version == 2


def test_threads_missing_the_same_lookup_at_once_query_the_database_once(svc, artifacts):
    """When a cached alias lookup expires under load, one thread looks it up; the rest wait for it."""
    import threading

    from sqlalchemy import event

    from app.registry.registry import Registry

    svc.registry.register("herd", artifacts["iris"])
    registry = Registry(svc.engine, svc.settings.artifact_root, cache_seconds=60.0)
    statements: list[str] = []
    start = threading.Barrier(16)

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    def resolve() -> int:
        start.wait()
        return registry.resolve("herd").version

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        threads = [threading.Thread(target=resolve) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)

    lookups = [s for s in statements if "FROM models" in s]
    assert len(lookups) == 1, f"{len(lookups)} threads looked the model up"
