"""What API keys and rate limiting cost per request, measured side by side in one process.

    python -m bench.security_overhead [--requests 400] [--rounds 7]

Three apps on the same PostgreSQL database and Redis: no auth and no limiter, auth only,
auth and the limiter (the default). Each round sends the same submit to each app in turn
through Flask's test client (no network, no gunicorn: only the request path differs); the
row is cached, so every submit is answered 200 at once and no worker is involved. Reports
the median over rounds of the mean CPU time per request in this process (steadier than the
wall time on a shared machine) and of the mean wall time, and the differences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
from redis import Redis
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from app import create_app
from app.config import Settings
from app.migrate import upgrade
from app.predictions.items import encode_output
from app.predictions.queue import cache_keys
from scripts.local import scratch_database

ADMIN_URL = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
ROW = [5.1, 3.5, 1.4, 0.2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per app per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as work, scratch_database(ADMIN_URL, "predq_secbench") as url:
        upgrade(url)
        x, y = load_iris(return_X_y=True)
        artifact = Path(work) / "iris.joblib"
        joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y), artifact)
        base = Settings(
            database_url=url,
            redis_url=REDIS_URL,
            artifact_root=str(Path(work) / "artifacts"),
            log_requests=False,  # a log line per request would be most of what is measured
        )
        apps = {
            "no auth, no limiter": create_app(base.replace(auth_enabled=False)),
            "auth only": create_app(base),
            "auth + rate limiter": create_app(base),
        }
        for name, app in apps.items():
            if name != "auth + rate limiter":
                app.extensions["rate_limits"].enabled = False
        svc = apps["auth only"].extensions["predq"]
        svc.registry.register("iris", artifact)
        _, token = svc.keys.create("bench", ["predict"], rate_limit="1000000/second")
        # Put the row in the cache, as a worker would have, so every submit finishes at once.
        probe = (
            apps["auth only"]
            .test_client()
            .post(
                "/v1/models/iris/predictions",
                json={"inputs": [ROW]},
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        assert probe.status_code == 202, probe.json
        cached = encode_output({"prediction": 0})
        svc.cache.set(cache_keys("iris", 1, np.asarray([ROW], dtype=np.float64))[0], cached)

        clients = {name: app.test_client() for name, app in apps.items()}
        headers = {"Authorization": f"Bearer {token}"}
        cpu: dict[str, list[float]] = {name: [] for name in apps}
        wall: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.rounds):
            for name, client in clients.items():
                cpu_tick, wall_tick = time.process_time(), time.perf_counter()
                for _ in range(args.requests):
                    response = client.post(
                        "/v1/models/iris/predictions", json={"inputs": [ROW]}, headers=headers
                    )
                    assert response.status_code == 200, response.json
                cpu[name].append((time.process_time() - cpu_tick) / args.requests * 1e6)
                wall[name].append((time.perf_counter() - wall_tick) / args.requests * 1e6)
        print(f"{args.rounds} rounds x {args.requests} cached submits per app; median of per-round means")
        for label, timings in (("CPU", cpu), ("wall", wall)):
            medians = {name: statistics.median(values) for name, values in timings.items()}
            baseline = medians["no auth, no limiter"]
            for name, value in medians.items():
                print(
                    f"  {label:<4} {name:<22} {value:8.1f} µs/request"
                    f"  ({value - baseline:+7.1f} µs, {value / baseline:.2f}×)"
                )
    Redis.from_url(REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
