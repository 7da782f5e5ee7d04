"""The console's pages with 1,000,000 jobs and 200 batch jobs stored: each page's median, and
the plan of every SQL statement a page runs (is it on an index?).

    python -m bench.console [--jobs 1000000] [--batch-jobs 200] [--repeat 15]

A scratch PostgreSQL database (dropped after) is seeded with COPY: four models of two versions
(iris forests), a million jobs over a week (97% succeeded, 2% failed with an error, 1%
queued; half an admin key's, half a predict key's), 200 batch jobs of 10 chunks each, 20,000
feedback rows and 30 drift reports per model, then ANALYZEd. Each page is asked through
Flask's test client in this process (the server's whole work: queries, Redis, charts,
templates; no HTTP), signed in as the admin key and, for the pages that differ, as the predict
key. Redis is BENCH_REDIS_URL (DB 12 by default), flushed first. Prints a table and exits
non-zero when a page's median is over 300 ms (unless --no-assert).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import joblib
from redis import Redis
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sqlalchemy import event

from app import create_app
from app.config import Settings
from app.migrate import upgrade
from scripts.local import scratch_database
from tests.helpers import console_client

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
MODELS = ["bench-a", "bench-b", "bench-c", "bench-d"]
TARGET_MS = 300.0


def seed(app: Any, jobs: int, batch_jobs: int, owners: list[int]) -> str:
    """COPY the rows in; returns a job id for the job page."""
    svc = app.extensions["predq"]
    now = datetime.now(UTC)
    rng = random.Random(0)
    inputs, output = json.dumps([[5.1, 3.5, 1.4, 0.2]]), json.dumps([{"prediction": 0}])
    error = json.dumps({"code": "model_error", "message": "the model refused the row", "details": {}})
    some_id = ""
    raw = svc.engine.raw_connection()
    try:
        cursor = raw.cursor()
        columns = "id, model_name, model_version, status, n_rows, inputs, outputs, error, cached_rows, owner_key_id, created_at, completed_at"  # noqa: E501
        with cursor.copy(f"COPY jobs ({columns}) FROM STDIN") as copy:
            for i in range(jobs):
                job_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                created = now - timedelta(seconds=rng.random() * 7 * 86400)
                roll = rng.random()
                status = "queued" if roll < 0.01 else "failed" if roll < 0.03 else "succeeded"
                done = None if status == "queued" else created + timedelta(milliseconds=20)
                copy.write_row((job_id, MODELS[i % 4], 1 + i % 2, status, 1, inputs,
                                output if status == "succeeded" else None, error if status == "failed" else None,
                                0, owners[i % 2], created, done))  # fmt: skip
                if i == 0:
                    some_id = str(job_id)
        with cursor.copy(
            "COPY bulk_jobs (id, model_name, model_version, status, source, output_format, rows_total, chunk_rows,"
            " chunks_total, owner_key_id, created_at, started_at, completed_at) FROM STDIN"
        ) as copy:
            chunks = []
            for i in range(batch_jobs):
                job_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                created = now - timedelta(hours=rng.random() * 72)
                status = "running" if i < 5 else rng.choice(["succeeded", "succeeded", "failed", "cancelled"])
                copy.write_row((job_id, MODELS[i % 4], 1, status, "upload.csv", "parquet", 500_000, 50_000, 10,
                                owners[i % 2], created, created, None if status == "running" else created))  # fmt: skip
                for index in range(10):
                    state = ("succeeded" if index < 4 else "queued") if status == "running" else "succeeded"
                    chunks.append((job_id, index, 50_000, state, 1, created))
        with cursor.copy(
            "COPY bulk_chunks (job_id, index, rows, status, attempts, queued_at) FROM STDIN"
        ) as copy:
            for chunk in chunks:
                copy.write_row(chunk)
        with cursor.copy(
            "COPY feedback (job_id, model_name, model_version, row, label, prediction, created_at) FROM STDIN"
        ) as copy:
            for i in range(20_000):
                label = rng.choice([0, 0, 0, 1])
                copy.write_row((uuid.uuid4(), MODELS[i % 4], 1 + i % 2, 0, json.dumps(label), json.dumps(0),
                                now - timedelta(days=rng.random() * 7)))  # fmt: skip
        features = json.dumps(
            [{"feature": f"f{k}", "ks_pvalue": 0.3, "psi": 0.05, "drifted": False} for k in range(4)]
        )
        with cursor.copy(
            "COPY drift_reports (model_name, model_version, created_at, status, drifted, drifted_share,"
            " reference_rows, window_rows, features) FROM STDIN"
        ) as copy:
            for name in MODELS:
                for k in range(30):
                    copy.write_row((name, 1, now - timedelta(hours=k), "ok", False, 0.25 * (k % 3), 2000, 5000,
                                    features))  # fmt: skip
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return some_id


def timed(client: Any, path: str, repeat: int) -> tuple[float, int]:
    client.get(path)  # warm: templates compiled, connections open
    samples = []
    status = 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        status = answer.status_code
    return statistics.median(samples), status


def plans(app: Any, client: Any, path: str) -> list[tuple[str, str]]:
    """(statement, plan) of each SQL statement the page runs, from EXPLAIN with its parameters."""
    engine = app.extensions["predq"].engine
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "pg_" not in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    out = []
    with engine.connect() as conn:
        for statement, parameters in seen:
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
            out.append((" ".join(statement.split())[:110], "\n      ".join(r[0] for r in rows)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--batch-jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-assert", action="store_true")
    args = parser.parse_args()
    Redis.from_url(REDIS_URL).flushdb()
    with scratch_database(ADMIN_URL, "predq_bench_console") as url, tempfile.TemporaryDirectory() as var:
        upgrade(url)
        settings = Settings(
            database_url=url, redis_url=REDIS_URL, var_dir=var, secret_key="bench", log_requests=False
        )
        app = create_app(settings)
        svc = app.extensions["predq"]
        x, y = load_iris(return_X_y=True)
        joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y), f"{var}/iris.joblib")
        for name in MODELS:
            for _ in range(2):
                svc.registry.register(name, f"{var}/iris.joblib")
        admin, admin_token = svc.keys.create("bench-admin", ["admin"])
        predict, predict_token = svc.keys.create("bench-predict", ["predict"])
        started = time.perf_counter()
        job_id = seed(app, args.jobs, args.batch_jobs, [admin.key_id, predict.key_id])
        print(
            f"seeded {args.jobs:,} jobs and {args.batch_jobs} batch jobs in {time.perf_counter() - started:.0f} s"
        )
        clients = {"admin": console_client(app, admin_token), "predict": console_client(app, predict_token)}
        pages = [
            ("admin", "/console/overview"),
            ("admin", "/console/models"),
            ("admin", "/console/models/bench-a"),
            ("admin", "/console/jobs?model=bench-a"),
            ("admin", f"/console/jobs/{job_id}"),
            ("admin", "/console/batch-jobs"),
            ("admin", "/console/keys"),
            ("predict", "/console/overview"),
            ("predict", "/console/jobs?model=bench-a"),
            ("predict", "/console/batch-jobs"),
        ]
        results = []
        for who, path in pages:
            median, status = timed(clients[who], path, args.repeat)
            results.append((who, path, median, status))
        print(f"\n{'key':8} {'page':40} {'median ms':>10} status")
        for who, path, median, status in results:
            print(f"{who:8} {path:40} {median:10.1f} {status}")
        print("\nEXPLAIN of each page's statements (admin, then predict key):")
        for who, path in pages:
            print(f"\n== {who} {path}")
            for statement, plan in plans(app, clients[who], path):
                print(f"  {statement}\n      {plan}")
        svc.engine.dispose()
    slow = [(p, m) for _, p, m, _ in results if m > TARGET_MS]
    if slow and not args.no_assert:
        sys.exit(f"over {TARGET_MS:.0f} ms at the median: {slow}")


if __name__ == "__main__":
    main()
