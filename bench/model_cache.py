"""The memory budget of a worker process (MODEL_CACHE_BYTES / MODEL_CACHE_MAX), measured from outside.

    python -m bench.model_cache [--trees 150] [--rows 40000] [--promotions 12] [--models 50] [--requests 500]
                                [--cache-max 10] [--linger S] [--skip-promotions] [--skip-models]

1. **Promotions.** One model promoted ``--promotions`` times in a row (each version a forest of
   ``--trees`` fully grown trees on ``--rows`` rows: fitted once, registered again each time, so
   every version is a load of its own of the same size), served by a worker with a pool of 2
   behind the API. After each promotion a request is answered by the new version and both pool
   processes have warmed it; then the worker's resident memory (main process and pool, psutil)
   is printed. Run twice, side by side: MODEL_CACHE_MAX=0 (no bound: the code before the budget)
   and MODEL_CACHE_MAX=2.
2. **Many models.** ``--models`` logistic regressions served round-robin by one worker (pool of 2)
   with MODEL_CACHE_MAX=10 (``--cache-max``; ``--linger`` sets QUEUE_LINGER_SECONDS), single-row
   requests from 8 clients; every answer is compared with the in-process model's
   ``predict_proba``. Then the same number of requests to one model. Prints requests/s of both,
   and the worker's loads and evictions (its /metrics).

Writes bench/results/model_cache[-linger<S>][-max<N>].json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import psutil
from redis import Redis

from bench.run import ADMIN_URL, BIN, PORT, REDIS_URL, granian, save_results
from scripts.local import ROOT, free_port, process_group, scratch_database, wait_for_http

MIB = 1024 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--promotions", type=int, default=12)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500, help="single-row requests per throughput run")
    parser.add_argument("--skip-promotions", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--linger", help="QUEUE_LINGER_SECONDS for the many-models worker (default: predq's)")
    parser.add_argument(
        "--cache-max", type=int, default=10, help="MODEL_CACHE_MAX for the many-models worker"
    )
    args = parser.parse_args()

    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
    }
    if not args.skip_promotions:
        forest = _forest(args.trees, args.rows)
        report["promotions"] = {
            label: promotions(forest, args.promotions, cache_max)
            for label, cache_max in (("unbounded (MODEL_CACHE_MAX=0)", 0), ("MODEL_CACHE_MAX=2", 2))
        }
    if not args.skip_models:
        report["many_models"] = many_models(args.models, args.requests, args.linger, args.cache_max)
    suffix = (
        ("-promotions" if args.skip_models else "")
        + ("" if args.linger is None else f"-linger{args.linger}")
        + ("" if args.cache_max == 10 else f"-max{args.cache_max}")
    )
    save_results(f"model_cache{suffix}", report)
    print(json.dumps(report, indent=2))
    return 0


def promotions(forest: Path, count: int, cache_max: int) -> dict[str, Any]:
    """Worker RSS (MiB, main + pool) after each of ``count`` promotions of the same-sized forest."""
    print(f"\n== promotions, MODEL_CACHE_MAX={cache_max}", flush=True)
    with _stack("predq_cache_promo", {"MODEL_CACHE_MAX": str(cache_max)}) as (stage, worker):
        rss = []
        rng = np.random.default_rng(0)
        for i in range(1, count + 1):
            version = stage.registry.register("forest", forest).version
            stage.registry.set_alias("forest", "champion", version)
            row = rng.normal(0, 1.5, size=(1, 20)).round(6).tolist()
            job = stage.predict("forest", row, version)  # the API's alias cache lags up to 2 s
            assert job["model"]["version"] == version, job
            # Both pool processes hold the new version (their warming loop reports it).
            _until(lambda v=version: stage.loaded_on("forest", v) == 2, 120)
            rss.append(round(_rss(worker) / MIB, 1))
            print(f"version {i:2d}: worker RSS {rss[-1]:8.1f} MiB", flush=True)
    return {
        "artifact_mib": round(forest.stat().st_size / MIB, 1),
        "rss_mib": rss,
        "growth_2nd_to_last_mib": round(rss[-1] - rss[1], 1) if len(rss) > 1 else None,
    }


def many_models(count: int, requests: int, linger: str | None, cache_max: int) -> dict[str, Any]:
    """``count`` small models round-robin with MODEL_CACHE_MAX=``cache_max``, then one model, same requests."""
    print(
        f"\n== {count} models round-robin, MODEL_CACHE_MAX={cache_max}, linger {linger or 'default'}",
        flush=True,
    )
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    extra = {"MODEL_CACHE_MAX": str(cache_max)} | (
        {"QUEUE_LINGER_SECONDS": linger} if linger is not None else {}
    )
    with _stack("predq_cache_many", extra) as (stage, _):
        models = {}
        for i in range(count):
            X, y = make_classification(n_samples=500, n_features=20, random_state=i)
            models[f"small-{i:02d}"] = model = LogisticRegression(max_iter=500).fit(X, y)
            path = stage.work / f"small-{i:02d}.joblib"
            joblib.dump(model, path)
            stage.registry.register(f"small-{i:02d}", path)
        names = list(models)
        rng = np.random.default_rng(1)
        plan_rr = [
            (names[k % count], rng.normal(0, 1.5, size=(1, 20)).round(6).tolist()) for k in range(requests)
        ]
        plan_one = [(names[0], rng.normal(0, 1.5, size=(1, 20)).round(6).tolist()) for _ in range(requests)]
        _run(stage, plan_rr[: 2 * count], models)  # warm-up: each model's first load is not the figure
        before = stage.worker_metrics()
        results = {}
        for label, plan in (("round_robin", plan_rr), ("one_model", plan_one)):
            started = time.perf_counter()
            compared = _run(stage, plan, models)
            elapsed = time.perf_counter() - started
            results[label] = {"requests_per_s": round(len(plan) / elapsed, 1), "answers": compared}
            print(f"{label}: {results[label]}", flush=True)
        after = stage.worker_metrics()
    results["loads_in_run"] = _total(after, "predq_model_loads_total") - _total(
        before, "predq_model_loads_total"
    )
    results["evictions_in_run"] = _total(after, "predq_model_evictions_total") - _total(
        before, "predq_model_evictions_total"
    )
    results["loads_total"] = _total(after, "predq_model_loads_total")
    results["evictions_total"] = _total(after, "predq_model_evictions_total")
    return results


def _run(stage: Any, plan: list[tuple[str, list[list[float]]]], models: dict[str, Any]) -> dict[str, Any]:
    """Send every (model, row) with 8 clients; how the answers compare with each model's own.

    A linear model's probabilities for a row can differ in the last bit between a batch of
    several rows and the row alone (the matrix product's summation order), so besides bit-for-bit
    matches the largest difference is reported.
    """

    def one(item: tuple[str, list[list[float]]]) -> float:
        name, row = item
        output = stage.predict(name, row)["outputs"][0]
        model = models[name]
        expected = model.predict_proba(np.asarray(row))[0]
        got = [output["probabilities"][str(c)] for c in model.classes_]
        assert output["prediction"] == model.predict(np.asarray(row))[0].item(), (name, output)
        return float(np.max(np.abs(np.asarray(got) - expected)))

    with ThreadPoolExecutor(8) as pool:
        diffs = list(pool.map(one, plan))
    return {"bit_for_bit": sum(d == 0 for d in diffs), "of": len(diffs), "max_abs_diff": max(diffs)}


class _Stage:
    def __init__(self, work: Path, registry: Any, token: str, metrics_url: str) -> None:
        self.work, self.registry, self.metrics_url = work, registry, metrics_url
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{PORT}", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def predict(self, name: str, rows: list[list[float]], version: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": rows} | ({"version": version} if version else {})
        response = self.http.post(f"/v1/models/{name}/predictions?wait=30", json=body)
        job = response.json()
        assert response.status_code == 200 and job["status"] == "succeeded", job
        return job  # type: ignore[no-any-return]

    def loaded_on(self, name: str, version: int) -> int:
        versions = self.http.get(f"/v1/models/{name}").json()["versions"]
        return next(v["loaded_on"] or 0 for v in versions if v["version"] == version)  # type: ignore[no-any-return]

    def worker_metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.metrics_url, timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


class _stack:
    """A scratch database, the API (granian) and a worker (pool of 2) with ``extra`` settings."""

    def __init__(self, prefix: str, extra: dict[str, str]) -> None:
        self.prefix, self.extra, self.exits = prefix, extra, ExitStack()

    def __enter__(self) -> tuple[_Stage, psutil.Process]:
        from app.access.auth import ApiKeys
        from app.db import make_engine
        from app.migrate import upgrade
        from app.registry.registry import Registry

        work = Path(tempfile.mkdtemp(prefix="predq-model-cache-"))
        database_url = self.exits.enter_context(scratch_database(ADMIN_URL, self.prefix))
        upgrade(database_url)
        Redis.from_url(REDIS_URL).flushdb()
        metrics_port = free_port()
        env = dict(__import__("os").environ) | {
            "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "VAR_DIR": str(work),
            "ARTIFACT_ROOT": str(work / "artifacts"), "BIND": f"127.0.0.1:{PORT}", "LOG_REQUESTS": "0",
            "WARM_INTERVAL_SECONDS": "1", "WORKER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "PYTHONPATH": str(ROOT), **self.extra,
        }  # fmt: skip
        engine = make_engine(database_url, 2)
        registry = Registry(engine, str(work / "artifacts"), cache_seconds=0)
        token = ApiKeys(engine).create(
            f"bench-{uuid.uuid4().hex[:6]}", ["predict"], rate_limit="1000000/second"
        )[1]
        api = self.exits.enter_context(process_group(granian("app.wsgi:app"), env, work / "api.log"))
        worker_argv = [str(BIN / "celery"), "-A", "workers.main", "worker", "-Q", "inference,maintenance",
                       "--concurrency=2", "--loglevel=WARNING", "-n", f"cache-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip
        worker = self.exits.enter_context(process_group(worker_argv, env, work / "worker.log"))
        wait_for_http(f"http://127.0.0.1:{PORT}/readyz", [api, worker], timeout=180)
        return _Stage(work, registry, token, f"http://127.0.0.1:{metrics_port}/metrics"), psutil.Process(
            worker.pid
        )

    def __exit__(self, *exc: object) -> None:
        self.exits.close()


def _forest(trees: int, rows: int) -> Path:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    print(
        f"fitting RandomForest({trees} fully grown trees) on make_classification({rows}, 20) ...", flush=True
    )
    X, y = make_classification(n_samples=rows, n_features=20, random_state=0)
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=2).fit(X, y)
    model.set_params(n_jobs=None)
    path = Path(tempfile.mkdtemp(prefix="predq-forest-")) / "forest.joblib"
    joblib.dump(model, path)
    print(f"artifact: {path.stat().st_size / MIB:.1f} MiB", flush=True)
    return path


def _rss(process: psutil.Process) -> int:
    return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and ("cache", "models") in labels)


def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker never got there")
        time.sleep(0.2)


if __name__ == "__main__":
    raise SystemExit(main())
