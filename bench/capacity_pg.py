"""PostgreSQL at a week of traffic: bytes per job, retention by DROP against DELETE, and what
dropping a day costs the single-row writes going on meanwhile.

    python -m bench.capacity_pg [--jobs 800000] [--days 8] [--threads 8] [--seconds 10]
                                [--steady S --rate 1000 --retention 60]

Loads ``--jobs`` synthetic finished single-row jobs (20 features, a two-class output, as the
benchmark's model answers; UUIDv7 ids naming their created_at, as the API makes them) spread
evenly over ``--days`` days into a scratch database migrated to head, by COPY, each day into
its own partition (made first, as the sweeper makes them ahead). Reports:

- table, TOAST and index bytes per job, summed over the partitions;
- single-row writes (the API's statement: one autocommitted INSERT of one job, ``--threads``
  at once for ``--seconds``) against the loaded database and against an empty one: jobs/s
  and p50/p99 per INSERT, alternating, the median of 3 each (the API and its Redis are not in
  this: the database's share of a submit only);
- the oldest day dropped as the sweeper drops it (workers/partitions.py: DETACH and DROP in
  one transaction) while the same writes run: seconds, and their p99 during the drop's window
  beside a window without;
- the next day deleted instead as the sweeper clears the default partition (batches of
  5,000, a transaction each): seconds, and the bytes it leaves (a DELETE frees nothing to the
  operating system until VACUUM FULL).

- with ``--steady S``: a writer inserting ``--rate`` finished jobs/s for S seconds into the
  default partition (today's partitions detached: the sweeper was down) while the retention
  pass runs every 30 s with a ``--retention`` of 60 s, the table's row count sampled every
  10 s: it must level off (between rate × retention and rate × (retention + 30 s)), not grow.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import uuid_utils
from sqlalchemy import column, create_engine, delete, select, table, text

from app.db.ids import time_of
from app.db.partitions import create_day, day_name, day_of, partitions
from app.migrate import upgrade
from bench.run import ADMIN_URL
from scripts.local import scratch_database
from workers.partitions import drop_past
from workers.retention import RETENTION_BATCH_ROWS, expire_jobs, in_batches

COLUMNS = "id, model_name, model_version, status, n_rows, inputs, outputs, cached_rows, created_at, started_at, completed_at"


def v7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 naming ``moment`` (to the millisecond), as the API would have made it then."""
    return uuid.UUID(int=uuid_utils.uuid7(nanoseconds=int(moment.timestamp() * 1000) * 1_000_000).int)


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
                    job_id = v7_at(start + timedelta(seconds=i * span))
                    created = time_of(job_id)
                    assert created is not None
                    p = float(rng.random())
                    inputs = orjson.dumps([row.tolist()]).decode()
                    outputs = orjson.dumps(
                        [{"prediction": int(p > 0.5), "probabilities": {"0": 1 - p, "1": p}}]
                    ).decode()
                    stamp = created.isoformat()
                    done = (created + timedelta(milliseconds=15)).isoformat()
                    buffer.write(
                        f"{job_id}\tbench\t1\tsucceeded\t1\t{inputs}\t{outputs}\t0\t{stamp}\t{stamp}\t{done}\n"
                    )
                buffer.seek(0)
                with cursor.copy(f"COPY jobs ({COLUMNS}) FROM STDIN") as copy:
                    copy.write(buffer.read())
                raw.commit()
    finally:
        raw.close()


def sizes(conn, n: int) -> dict[str, float]:
    """Bytes per job over every partition of jobs (a partitioned parent has none of its own)."""
    found = conn.execute(text(
        "SELECT sum(pg_table_size(inhrelid)), sum(pg_indexes_size(inhrelid)) FROM pg_inherits "
        "WHERE inhparent = 'jobs'::regclass"
    )).one()  # fmt: skip
    return {"table_bytes_per_job": round(found[0] / n, 1), "index_bytes_per_job": round(found[1] / n, 1),
            "total_bytes": int(found[0] + found[1])}  # fmt: skip


def single_row_writes(engine, threads: int, seconds: float, during=None) -> dict[str, object]:
    """``threads`` writers, each inserting one job per autocommitted statement for ``seconds``;
    ``during`` (if given) runs once halfway. Latencies of the INSERTs started in ``during``'s
    window are reported apart (p99 during vs the rest)."""
    latencies: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()
    window: list[float] = []

    def writer() -> None:
        mine = []
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            statement = text(
                f"INSERT INTO jobs ({COLUMNS}) VALUES (:id, 'bench', 1, 'queued', 1, :inputs, NULL, 0, :t, NULL, NULL)"
            )
            while not stop.is_set():
                job_id = uuid.UUID(int=uuid_utils.uuid7().int)
                began = time.perf_counter()
                conn.execute(statement, {"id": job_id, "inputs": "[[0.5, 1.5]]", "t": time_of(job_id)})
                mine.append((began, time.perf_counter() - began))
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=writer) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    result: dict[str, object] = {}
    if during is not None:
        time.sleep(seconds / 2)
        window.append(time.perf_counter())
        result["during"] = during()
        window.append(time.perf_counter())
    time.sleep(max(0.0, started + seconds - time.perf_counter()))
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    all_ms = sorted(ms * 1000 for _, ms in latencies)
    result |= {"jobs_per_s": round(len(all_ms) / elapsed), "p50_ms": round(_pct(all_ms, 50), 2),
               "p99_ms": round(_pct(all_ms, 99), 2)}  # fmt: skip
    if window:
        inside = sorted(ms * 1000 for t, ms in latencies if window[0] - 0.05 <= t <= window[1])
        outside = sorted(ms * 1000 for t, ms in latencies if not window[0] - 0.05 <= t <= window[1])
        result |= {"writes_in_drop_window": len(inside), "p99_ms_in_drop_window": round(_pct(inside, 99), 2),
                   "max_ms_in_drop_window": round(max(inside, default=0.0), 2),
                   "p99_ms_outside_drop_window": round(_pct(outside, 99), 2)}  # fmt: skip
    return result


def _pct(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct / 100))] if values else float("nan")


def compare_writes(loaded, empty, threads: int, seconds: float, rounds: int = 3) -> dict[str, object]:
    """Single-row writes on the loaded database and the empty one, alternating; medians."""
    runs: dict[str, list[dict[str, object]]] = {"loaded": [], "empty": []}
    for i in range(rounds * 2):
        name = ("loaded", "empty", "empty", "loaded")[i % 4]  # neither always first
        runs[name].append(single_row_writes(loaded if name == "loaded" else empty, threads, seconds))
    return {name: {key: statistics.median(float(run[key]) for run in found) for key in ("jobs_per_s", "p50_ms", "p99_ms")}
            | {"runs_jobs_per_s": [run["jobs_per_s"] for run in found]} for name, found in runs.items()}  # fmt: skip


def delete_day(engine, name: str) -> int:
    """Every row of partition ``name``, in batches as the sweeper clears the default partition."""
    part = table(name, column("id"), column("created_at"))
    oldest = select(part.c.id).order_by(part.c.created_at).limit(RETENTION_BATCH_ROWS).scalar_subquery()
    statement = delete(part).where(part.c.id.in_(oldest))
    return in_batches(engine, lambda conn: conn.execute(statement).rowcount, float("inf"))


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
    parser.add_argument("--threads", type=int, default=8, help="single-row writers at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each single-row run")
    parser.add_argument("--steady", type=float, default=0.0, help="seconds of steady writes (0: none)")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--retention", type=float, default=60.0)
    args = parser.parse_args()
    first = day_of(datetime.now(UTC)) - timedelta(days=args.days + 1)
    days = [first + timedelta(days=d) for d in range(args.days)]
    report: dict[str, object] = {"jobs": args.jobs, "days": args.days}
    with (
        scratch_database(ADMIN_URL, "predq_capacity_pg") as url,
        scratch_database(ADMIN_URL, "predq_capacity_empty") as empty_url,
    ):
        upgrade(url)
        upgrade(empty_url)
        engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=args.threads + 2)
        empty = create_engine(empty_url, isolation_level="AUTOCOMMIT", pool_size=args.threads + 2)
        with engine.connect() as conn:
            for day in days:
                create_day(conn, "jobs", day)
        tick = time.perf_counter()
        copy_jobs(engine, args.jobs, first, args.days)
        report["copy_seconds"] = round(time.perf_counter() - tick, 1)
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
            report["bytes"] = sizes(conn, args.jobs)
            first_day = conn.execute(text(f"SELECT count(*), pg_total_relation_size('{day_name('jobs', days[0])}') "
                                          f"FROM {day_name('jobs', days[0])}")).one()  # fmt: skip
        report["single_row_writes"] = compare_writes(engine, empty, args.threads, args.seconds)
        timed: dict[str, float] = {}

        def drop_oldest() -> object:
            began = time.perf_counter()
            dropped = drop_past(engine, "jobs", days[1])
            timed["seconds"] = time.perf_counter() - began
            return dropped

        report["drop_one_day_under_writes"] = single_row_writes(engine, args.threads, args.seconds, drop_oldest) | {
            "jobs_dropped": first_day[0], "bytes_freed": first_day[1], "drop_seconds": round(timed["seconds"], 3)}  # fmt: skip
        report["writes_without_drop"] = single_row_writes(engine, args.threads, args.seconds)
        second = day_name("jobs", days[1])
        with engine.connect() as conn:
            before = conn.execute(text(f"SELECT pg_total_relation_size('{second}')")).scalar_one()
        tick = time.perf_counter()
        deleted = delete_day(engine, second)
        seconds = time.perf_counter() - tick
        with engine.connect() as conn:
            after = conn.execute(text(f"SELECT pg_total_relation_size('{second}')")).scalar_one()
            report["partitions_left"] = sorted(p.name for p in partitions(conn, "jobs"))
        report["delete_one_day"] = {"jobs": deleted, "seconds": round(seconds, 2), "jobs_per_s": round(deleted / seconds),
                                    "bytes_before": before, "bytes_after": after}  # fmt: skip
        if args.steady:
            with engine.connect() as conn:
                conn.execute(text("TRUNCATE jobs"))
                for part in partitions(conn, "jobs"):
                    if part.upper is not None:  # every day: writes land in the default partition
                        conn.execute(text(f"ALTER TABLE jobs DETACH PARTITION {part.name}"))
            report["steady"] = steady(engine, args.rate, args.steady, args.retention)
        engine.dispose()
        empty.dispose()
    print(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
