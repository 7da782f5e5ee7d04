"""PostgreSQL at a week of traffic: bytes per job, and retention by DELETE against DROP.

    python -m bench.capacity_pg [--jobs 800000] [--days 8]

Loads ``--jobs`` synthetic finished single-row jobs (20 features, a two-class output, as
the benchmark's model answers) spread evenly over ``--days`` days into a scratch database
migrated to head, by COPY. Reports:

- table, TOAST and index bytes per job (``pg_table_size``, ``pg_indexes_size``);
- the retention pass as the sweeper runs it (workers/retention.py: batches of 5,000, a
  transaction each) deleting the oldest day: seconds and jobs/s, and the table's size after
  (a DELETE frees nothing to the operating system until VACUUM FULL);
- the same rows in a table partitioned by day (native range partitioning on
  ``created_at``, loaded by INSERT … SELECT): dropping the oldest day's partition, in
  seconds, and the bytes that frees.

- with ``--steady S``: a writer inserting ``--rate`` finished jobs/s for S seconds while the
  sweeper's retention pass runs every 30 s with a ``--retention`` of 60 s, the table's row
  count sampled every 10 s: it must level off (between rate × retention and rate ×
  (retention + 30 s)), not grow.

Numbers for the closing note of issue 31 (partitioning by day was designed, not landed).
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from sqlalchemy import create_engine, text

from app.migrate import upgrade
from bench.run import ADMIN_URL
from scripts.local import scratch_database
from workers.retention import expire_jobs

COLUMNS = "id, model_name, model_version, status, n_rows, inputs, outputs, cached_rows, created_at, started_at, completed_at"


def copy_jobs(engine, n: int, start: datetime, days: int, chunk: int = 50_000) -> None:
    rng = np.random.default_rng(0)
    span = days * 86400 / n
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            for first in range(0, n, chunk):
                buffer = io.StringIO()
                rows = rng.normal(0, 1.5, size=(min(chunk, n - first), 20)).round(6)
                for i, row in enumerate(rows, start=first):
                    created = start + timedelta(seconds=i * span)
                    p = float(rng.random())
                    inputs = orjson.dumps([row.tolist()]).decode()
                    outputs = orjson.dumps(
                        [{"prediction": int(p > 0.5), "probabilities": {"0": 1 - p, "1": p}}]
                    ).decode()
                    stamp = created.isoformat()
                    done = (created + timedelta(milliseconds=15)).isoformat()
                    buffer.write(
                        f"{uuid.uuid4()}\tbench\t1\tsucceeded\t1\t{inputs}\t{outputs}\t0\t{stamp}\t{stamp}\t{done}\n"
                    )
                buffer.seek(0)
                with cursor.copy(f"COPY jobs ({COLUMNS}) FROM STDIN") as copy:
                    copy.write(buffer.read())
                raw.commit()
    finally:
        raw.close()


def sizes(conn, table: str, n: int) -> dict[str, float]:
    found = conn.execute(text(
        f"SELECT pg_table_size('{table}'), pg_indexes_size('{table}'), pg_total_relation_size('{table}')"
    )).one()  # fmt: skip
    return {"table_bytes_per_job": found[0] / n, "index_bytes_per_job": found[1] / n, "total_bytes": found[2]}


def partitioned_copy(conn, start: datetime, days: int) -> list[str]:
    conn.execute(
        text("CREATE TABLE jobs_by_day (LIKE jobs INCLUDING DEFAULTS) PARTITION BY RANGE (created_at)")
    )
    names = []
    for day in range(days + 1):
        lower = (start + timedelta(days=day)).date()
        name = f"jobs_by_day_{lower:%Y%m%d}"
        conn.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF jobs_by_day FOR VALUES FROM ('{lower}') TO ('{lower + timedelta(days=1)}')"
            )
        )
        names.append(name)
    conn.execute(text("CREATE TABLE jobs_by_day_default PARTITION OF jobs_by_day DEFAULT"))
    conn.execute(text("CREATE INDEX ON jobs_by_day (created_at)"))
    conn.execute(text("CREATE INDEX ON jobs_by_day (status)"))
    conn.execute(text("ALTER TABLE jobs_by_day ADD PRIMARY KEY (id, created_at)"))
    conn.execute(text("INSERT INTO jobs_by_day SELECT * FROM jobs"))
    return names


def steady(engine, rate: int, seconds: float, retention: float, sweep: float = 30.0) -> dict[str, object]:
    """Write ``rate`` jobs/s for ``seconds`` while retention runs every ``sweep`` s; the row counts seen."""
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        tick = time.monotonic()
        while not stop.is_set():
            now = datetime.now(UTC)
            n = rate // 10
            buffer = "".join(
                f'{uuid.uuid4()}\tbench\t1\tsucceeded\t1\t[[0.5]]\t[{{"prediction": 0}}]\t0\t{now}\t{now}\t{now}\n'
                for _ in range(n)
            )
            raw = engine.raw_connection()
            try:
                with raw.cursor() as cursor, cursor.copy(f"COPY jobs ({COLUMNS}) FROM STDIN") as copy:
                    copy.write(buffer)
                raw.commit()
            finally:
                raw.close()
            written[0] += n
            tick += 0.1
            time.sleep(max(0.0, tick - time.monotonic()))

    thread = threading.Thread(target=writer)
    thread.start()
    counts, passes = [], []
    started = next_sweep = time.monotonic()
    while time.monotonic() - started < seconds:
        if time.monotonic() >= next_sweep:
            tick = time.perf_counter()
            deleted = expire_jobs(
                engine, datetime.now(UTC) - timedelta(seconds=retention), deadline=time.monotonic() + 10
            )
            passes.append({"deleted": deleted, "seconds": round(time.perf_counter() - tick, 2)})
            next_sweep += sweep
        with engine.connect() as conn:
            counts.append(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())
        time.sleep(10)
    stop.set()
    thread.join()
    elapsed = time.monotonic() - started
    return {"rate_asked": rate, "rate_written": round(written[0] / elapsed), "seconds": round(elapsed),
            "retention_seconds": retention, "row_counts_every_10s": counts, "retention_passes": passes}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=800_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--steady", type=float, default=0.0, help="seconds of steady writes (0: none)")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--retention", type=float, default=60.0)
    args = parser.parse_args()
    start = (datetime.now(UTC) - timedelta(days=args.days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    report: dict[str, object] = {"jobs": args.jobs, "days": args.days}
    with scratch_database(ADMIN_URL, "predq_capacity_pg") as url:
        upgrade(url)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        tick = time.perf_counter()
        copy_jobs(engine, args.jobs, start, args.days)
        report["copy_seconds"] = round(time.perf_counter() - tick, 1)
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
            report["before"] = sizes(conn, "jobs", args.jobs)
            tick = time.perf_counter()
            names = partitioned_copy(conn, start, args.days)
            report["partitioned_load_seconds"] = round(time.perf_counter() - tick, 1)
            conn.execute(text("VACUUM ANALYZE jobs_by_day"))
            first_day = conn.execute(
                text(f"SELECT count(*), pg_total_relation_size('{names[0]}') FROM {names[0]}")
            ).one()
        cutoff = start + timedelta(days=1)
        tick = time.perf_counter()
        deleted = expire_jobs(engine, cutoff, deadline=float("inf"))
        seconds = time.perf_counter() - tick
        report["delete_one_day"] = {
            "jobs": deleted,
            "seconds": round(seconds, 2),
            "jobs_per_s": round(deleted / seconds),
        }
        with engine.connect() as conn:
            report["after_delete"] = sizes(conn, "jobs", args.jobs - deleted)
            tick = time.perf_counter()
            conn.execute(text(f"DROP TABLE {names[0]}"))
            report["drop_one_day"] = {"jobs": first_day[0], "seconds": round(time.perf_counter() - tick, 3),
                                      "bytes_freed": first_day[1]}  # fmt: skip
        if args.steady:
            with engine.connect() as conn:
                conn.execute(text("TRUNCATE jobs CASCADE"))
            report["steady"] = steady(engine, args.rate, args.steady, args.retention)
        engine.dispose()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
