"""Batch jobs with BATCH_ROOT on an S3 server against BATCH_ROOT on local disk, in one run.

The same Parquet file (the benchmark's model: RandomForest, 100 trees, 20 features) goes
through ``POST /v1/models/{name}/batch-jobs`` end to end (upload, check and rewrite into
BATCH_ROOT, chunks scored by the bulk worker reading their row group, parts and merged
result written to BATCH_ROOT, result downloaded) twice per store, alternating local and S3,
on predq's real processes (API under granian, an online worker, a bulk worker of 2).
The S3 server is moto's standalone server on this machine (it shares the cores), started
here unless BENCH_S3_ENDPOINT names one. Reports rows/s per store, their ratio (target:
S3 >= 0.6x local) and the bulk worker's peak RSS per store.

    python -m bench.bulk_s3 [--rows 1000000]

Writes bench/results/bulk_s3.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import psutil

from bench.bulk import BASE_URL, CHUNK_ROWS, bulk_pool, peak_rss, submit, wait_finished, worker, write_file
from bench.run import ADMIN_URL, BIN, granian, prepare, running, save_results
from scripts.local import free_port, process_group, scratch_database, wait_for_http

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "predq-bench", "AWS_SECRET_ACCESS_KEY": "predq-bench-secret"}


def s3_endpoint(work: Path, stack: Any) -> str:
    endpoint = os.environ.get("BENCH_S3_ENDPOINT")
    if endpoint:
        return endpoint
    port = free_port()
    argv = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    proc = stack.enter_context(process_group(argv, dict(os.environ), work / "moto.log"))
    wait_for_http(f"http://127.0.0.1:{port}/", [proc], timeout=60)
    return f"http://127.0.0.1:{port}"


def make_bucket(endpoint: str) -> str:
    name = f"predq-bench-{uuid.uuid4().hex[:10]}"
    client = botocore.session.Session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


def score_file(client: httpx.Client, path: Path, out: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """Upload to downloaded result, by phase: submit (upload, check, rewrite into BATCH_ROOT),
    scoring (chunks and merge), download; in seconds. And the finished job."""
    tick = time.perf_counter()
    submitted = submit(client, path)
    accepted = time.perf_counter()
    job = wait_finished(client, submitted["id"])
    finished = time.perf_counter()
    with client.stream("GET", f"/v1/batch-jobs/{job['id']}/result", timeout=600) as response:
        response.raise_for_status()
        with open(out, "wb") as sink:
            for piece in response.iter_bytes(1 << 20):
                sink.write(piece)
    done = time.perf_counter()
    phases = {"submit": accepted - tick, "scoring": finished - accepted, "download": done - finished}
    return phases | {"total": done - tick}, job


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the file")
    parser.add_argument("--runs", type=int, default=2, help="jobs per store (alternating)")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    from contextlib import ExitStack

    work = Path(tempfile.mkdtemp(prefix="predq-bench-s3-"))
    path = work / "rows.parquet"
    write_file(path, args.rows, seed=1)
    started = time.monotonic()
    seconds: dict[str, list[float]] = {"local": [], "s3": []}
    rss: dict[str, float] = {"local": 0.0, "s3": 0.0}
    by_phase: dict[str, dict[str, list[float]]] = {"local": {}, "s3": {}}
    with ExitStack() as stack, scratch_database(ADMIN_URL, "predq_bench_s3") as database_url:
        endpoint = s3_endpoint(work, stack)
        bucket = make_bucket(endpoint)
        stage = prepare(database_url, work)
        base = stage.env | {"BATCH_CHUNK_ROWS": str(CHUNK_ROWS), "BATCH_MAX_BYTES": str(16 << 30),
                            "WORKER_METRICS_BIND": "", "S3_ENDPOINT_URL": endpoint}  # fmt: skip
        roots = {"local": str(work / "batches"), "s3": f"s3://{bucket}/batches"}
        for run in range(args.runs):
            for store, root in roots.items():
                commands = {
                    "api": granian("app.wsgi:app"),
                    "worker": worker("inference", 1, f"online{run}{store}"),
                    "bulk": worker("bulk", 2, f"bulk{run}{store}"),
                }
                with (
                    running(commands, base | {"BATCH_ROOT": root}, f"{BASE_URL}/healthz", work),
                    httpx.Client(
                        base_url=BASE_URL, headers={"Authorization": f"Bearer {stage.token}"}
                    ) as client,
                ):
                    with peak_rss(bulk_pool()) as peak:
                        phases, job = score_file(client, path, work / f"result-{store}.parquet")
                    assert job["status"] == "succeeded", job
                took = phases["total"]
                seconds[store].append(took)
                for phase, value in phases.items():
                    by_phase[store].setdefault(phase, []).append(round(value, 2))
                rss[store] = max(rss[store], peak["mib"])
                print(f"  {store:>5}: {args.rows:,} rows in {took:.1f} s ({args.rows / took:,.0f} rows/s; submit"
                      f" {phases['submit']:.1f} s, scoring {phases['scoring']:.1f} s, download {phases['download']:.1f} s),"
                      f" bulk worker peak RSS {peak['mib']:.0f} MiB", flush=True)  # fmt: skip
    rates = {store: args.rows / statistics.median(times) for store, times in seconds.items()}
    ratio = rates["s3"] / rates["local"]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": psutil.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1)},
        "seconds": round(time.monotonic() - started),
        "rows": args.rows,
        "chunk_rows": CHUNK_ROWS,
        "runs_seconds": {store: [round(t, 2) for t in times] for store, times in seconds.items()},
        "rows_per_s": {store: round(rate) for store, rate in rates.items()},
        "phases_seconds": by_phase,
        "bulk_peak_rss_mib": {store: round(mib) for store, mib in rss.items()},
        "targets": [
            {
                "target": "BATCH_ROOT on S3 >= 0.6x local disk, rows/s end to end",
                "value": round(ratio, 2),
                "met": ratio >= 0.6,
            }
        ],  # fmt: skip
    }
    save_results("bulk_s3", report, markdown(report))
    print(markdown(report), flush=True)
    return 0 if ratio >= 0.6 else 1


def markdown(report: dict[str, Any]) -> str:
    rates, rss = report["rows_per_s"], report["bulk_peak_rss_mib"]
    return "\n".join([
        f"Batch jobs, BATCH_ROOT on S3 (moto on this machine) against local disk, {report['when']}"
        f" ({report['machine']['cpus']} CPUs, load {report['machine']['load_average_1m']}, {report['seconds']} s)",
        "",
        "| BATCH_ROOT | rows/s (median) | runs (s) | bulk worker peak RSS (MiB) |",
        "|---|---|---|---|",
        *[f"| {store} | {rates[store]:,} | {report['runs_seconds'][store]} | {rss[store]} |" for store in rates],
        "",
        f"{report['rows']:,} rows, chunks of {report['chunk_rows']:,}; S3 / local: {report['targets'][0]['value']}x"
        f" (target >= 0.6x: {'met' if report['targets'][0]['met'] else 'missed'}).",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
