"""The memory budget of a worker process (app/registry/memory.py), with a real worker: versions
out of service go first, a version bigger than the whole budget still serves, the metrics and
``loaded_on`` say what each process holds.

The worker here has a Redis DB of its own (TEST_MODEL_CACHE_REDIS_URL, DB 10 of the test
server by default), so the session's worker never takes these models' rows.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import joblib
import pytest
from redis import Redis
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sqlalchemy import text

from app import create_app
from app.processes import PROCESSES
from tests.helpers import REDIS_URL, bin_path, celery_worker, client_for, metric_samples, settings_env

CACHE_REDIS_URL = os.environ.get("TEST_MODEL_CACHE_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/10")
#: Bytes: the small models (~1 KB each) fit twice over; the forest (hundreds of KB) alone does not.
BUDGET = 20_000
X, Y = make_classification(n_samples=400, n_features=4, random_state=0)
ROWS = X[:5].round(3).tolist()
# Names starting with a digit sort before every other test's models: warming, which loads the
# versions in service in name order until the budget is full, takes these two first.
PREFIX = f"0mc{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def stack(settings, tokens, tmp_path_factory) -> Iterator[dict[str, Any]]:
    Redis.from_url(CACHE_REDIS_URL).flushdb()
    cache_settings = settings.replace(redis_url=CACHE_REDIS_URL, model_cache_max=2, model_cache_bytes=BUDGET)
    app = create_app(cache_settings)
    svc = app.extensions["predq"]
    directory = tmp_path_factory.mktemp("model-cache")
    models = {
        "a1": LogisticRegression(C=1.0).fit(X, Y),
        "a2": LogisticRegression(C=0.01).fit(X, Y),
        "b1": LogisticRegression(C=0.1).fit(X, Y),
        "big": RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y),
    }
    paths = {}
    for label, model in models.items():
        paths[label] = directory / f"{label}.joblib"
        joblib.dump(model, paths[label])
    names = {"a": f"{PREFIX}-a", "b": f"{PREFIX}-b", "big": f"{PREFIX}-z"}
    svc.registry.register(names["a"], paths["a1"])
    svc.registry.register(names["a"], paths["a2"])  # version 2: no alias, out of service
    svc.registry.register(names["b"], paths["b1"])
    svc.registry.register(names["big"], paths["big"])
    assert paths["big"].stat().st_size > BUDGET > 2 * max(paths[k].stat().st_size for k in ("a1", "a2", "b1"))

    port = _free_port()
    name = f"cache-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [bin_path(PROCESSES["worker"][0]), *PROCESSES["worker"][1:], "-c", "1", "-n", name]
    env = settings_env(cache_settings) | {
        "MODEL_CACHE_MAX": "2",
        "MODEL_CACHE_BYTES": str(BUDGET),
        "WARM_INTERVAL_SECONDS": "0.3",
        "WORKER_METRICS_BIND": f"127.0.0.1:{port}",
    }
    log_path = directory / "worker.log"
    with celery_worker(app, argv, env, name, log_path):
        yield {
            "app": app,
            "client": client_for(app, tokens["admin"]),
            "names": names,
            "models": models,
            "paths": paths,
            "metrics": f"http://127.0.0.1:{port}/metrics",
            "log": log_path,
        }


def test_versions_out_of_service_go_first_and_an_oversized_one_still_serves(stack):
    client, names, models = stack["client"], stack["names"], stack["models"]
    # Warming fills the budget (2 versions) with the first versions in service: a v1 and b v1.
    _until(
        lambda: _loaded_on(client, names["a"]) == {1: 1, 2: 0} and _loaded_on(client, names["b"]) == {1: 1}
    )

    # a v2 is asked for by number: loading it evicts the least recently used of the two (a v1).
    _predict(client, names["a"], models["a2"], version=2)
    # The next warming look loads a v1 (in service) again, and to make room drops a v2, out of
    # service, though b v1 is older: out-of-service versions go first.
    a = names["a"]
    out = (
        "predq_model_evictions_total",
        frozenset({("cache", "models"), ("model", a), ("reason", "out_of_service")}),
    )
    _until(lambda: _scrape(stack["metrics"]).get(out) == 1)
    _until(
        lambda: _loaded_on(client, names["a"]) == {1: 1, 2: 0} and _loaded_on(client, names["b"]) == {1: 1}
    )
    samples = _scrape(stack["metrics"])
    lru = ("predq_model_evictions_total", frozenset({("cache", "models"), ("model", a), ("reason", "lru")}))
    assert samples[lru] == 1 and samples[out] == 1
    assert samples[("predq_model_loads_total", frozenset({("cache", "models"), ("model", a)}))] == 3
    held = stack["paths"]["a1"].stat().st_size + stack["paths"]["b1"].stat().st_size
    assert samples[("predq_model_cache_bytes", frozenset({("cache", "models")}))] == held

    # The forest is bigger than the whole budget: it serves all the same, twice, and is not kept.
    for start in (0, 5):  # other rows the second time: the output cache would answer the same ones
        _predict(stack["client"], names["big"], models["big"], rows=X[start : start + 5].round(3).tolist())
    samples = _scrape(stack["metrics"])
    over = frozenset({("cache", "models"), ("model", names["big"]), ("reason", "over_budget")})
    assert samples[("predq_model_evictions_total", over)] >= 2
    assert "more than MODEL_CACHE_BYTES" in stack["log"].read_text()
    time.sleep(1)  # three warming looks: none loads the forest, nor drops what the budget holds
    assert _loaded_on(client, names["big"]) == {1: 0}
    assert _loaded_on(client, names["a"]) == {1: 1, 2: 0} and _loaded_on(client, names["b"]) == {1: 1}
    card = client.get(f"/v1/models/{names['b']}/versions/1/card").get_json()
    assert card["sections"]["model"]["loaded_on"] == 1


def _predict(client, name: str, model, version: int | None = None, rows: list[list[float]] = ROWS) -> None:
    body: dict[str, Any] = {"inputs": rows} | ({"version": version} if version else {})
    response = client.post(f"/v1/models/{name}/predictions?wait=20", json=body)
    assert response.status_code == 200, response.get_json()
    job = response.get_json()
    assert job["status"] == "succeeded", job
    expected = model.predict_proba(rows)
    for output, row in zip(job["outputs"], expected, strict=True):
        assert [output["probabilities"][str(k)] for k in model.classes_] == pytest.approx(row.tolist(), abs=0)


def _loaded_on(client, name: str) -> dict[int, int]:
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200
    return {v["version"]: v["loaded_on"] for v in response.get_json()["versions"]}


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the worker's loaded versions never got there"
        time.sleep(0.1)


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return metric_samples(response.text)


def _free_port() -> int:
    from scripts.local import free_port

    return free_port()


def test_explainers_are_held_under_the_same_bounds(svc, tmp_path):
    """The explainers of a process (app/scoring/explain.py) live in the registry's ``explainers``
    cache, bounded by MODEL_CACHE_MAX like the versions: a second version's pushes out the first's."""
    from sklearn.tree import DecisionTreeClassifier

    from app.registry.registry import Registry
    from app.scoring.explain import explanations

    registry = Registry(svc.engine, svc.settings.artifact_root, cache_seconds=0, cache_max=1)
    name = f"{PREFIX}-explained"
    for depth in (2, 3):
        path = tmp_path / f"tree-{depth}.joblib"
        joblib.dump(DecisionTreeClassifier(max_depth=depth, random_state=0).fit(X, Y), path)
        svc.registry.register(name, path)
    cache = registry.derived("explainers")
    for version in (1, 2):
        estimator, served = registry.load(name, version)
        found = explanations(
            estimator, served, X[:3], estimator.predict(X[:3]).tolist(), lambda: None, cache=cache
        )
        assert len(found) == 3
        assert cache.keys() == [(name, version, served.sha256)], "only the newest explainer is held"
        assert cache.held_bytes > 0, "sized by the arrays it holds"
    assert registry.loaded_versions() == [(name, 2)]


def test_a_held_version_is_served_while_an_eviction_waits_on_the_database(svc, tmp_path):
    """Loading a version past the budget asks the database which versions serve; while that
    answer is slow (here: the aliases table locked by another transaction), a lookup of a
    version already held (each batch makes one) does not wait for it."""
    from app.registry.registry import Registry

    registry = Registry(svc.engine, svc.settings.artifact_root, cache_seconds=0, cache_max=1)
    name = f"{PREFIX}-slow-db"
    for c in (1.0, 0.5):
        path = tmp_path / f"lr-{c}.joblib"
        joblib.dump(LogisticRegression(C=c).fit(X, Y), path)
        svc.registry.register(name, path)
    registry.loaded(name, 1)
    locked, release = threading.Event(), threading.Event()

    def lock_aliases() -> None:
        with svc.engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE model_aliases IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(LOCK_HELD_SECONDS)

    locker = threading.Thread(target=lock_aliases)
    locker.start()
    assert locked.wait(30)
    loader = threading.Thread(target=registry.loaded, args=(name, 2))  # the budget holds one
    loader.start()
    _until(lambda: _waiting_on_a_lock(svc) > 0)  # the eviction's query waits on the table

    tick = time.monotonic()
    held = registry.loaded(name, 1)
    took = time.monotonic() - tick
    release.set()
    locker.join(30)
    loader.join(30)

    assert held.served.version == 1
    assert took < LOCK_HELD_SECONDS / 2, f"the lookup waited {took:.1f} s for the eviction's query"
    assert registry.loaded_versions() == [(name, 2)], "the eviction went ahead once the database answered"


#: How long the test above holds the aliases table at most (an eviction waiting under the
#: cache's lock would hold the lookup this long).
LOCK_HELD_SECONDS = 8.0


def _waiting_on_a_lock(svc) -> int:
    with svc.engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%model_aliases%'"
            )
        ).scalar_one()
