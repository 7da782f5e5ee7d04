"""Does ``high`` work overtake saturating ``low`` work? Single-row high p99 idle and under load.

    python -m bench.priorities [--seconds 20] [--low-clients 8] [--low-rows 1000] [--workers 1]

The benchmark's model (RandomForest, 100 trees, 20 features) behind predq's real processes:
the API under granian and one online worker process (``--workers``), so a few clients
saturate it. One client sends single-row ``high`` requests one after another (submit with
``?wait=30``, then poll until ``done``), first alone (its idle latency), then while
``--low-clients`` clients keep the worker saturated with ``--low-rows``-row ``low`` requests;
then the same with both at ``normal`` (no priorities: the single-row requests wait their
turn). A batch's duration is read from the batches the worker recorded during the loaded
phase: the whole cycle (one batch's start to the next's). The target (issue 32): the high
p99 under load within its idle p99 plus one batch's duration (the batch in progress
finishes first), reported beside the low p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from sqlalchemy import text

from bench.loadgen import random_rows
from bench.run import ADMIN_URL, MODEL, PORT, celery, granian, prepare, running, save_results
from scripts.local import scratch_database


async def one(session: aiohttp.ClientSession, token: str, rows: list[list[float]], priority: str) -> float:
    """Seconds from submit to the job's answer (``done``); raises on an error answer."""
    auth = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    body = orjson.dumps({"inputs": rows, "priority": priority})
    async with session.post(f"/v1/models/{MODEL}/predictions?wait=30", data=body,
                            headers=auth | {"Content-Type": "application/json"}) as response:  # fmt: skip
        job = orjson.loads(await response.read())
        assert response.status in (200, 202), job
    while not job["done"]:
        async with session.get(f"/v1/predictions/{job['id']}?wait=30", headers=auth) as response:
            job = orjson.loads(await response.read())
    assert job["status"] == "succeeded", job
    return time.perf_counter() - started


async def phase(
    base: str, token: str, seconds: float, probe: str, load: str | None, clients: int, rows: int
) -> dict[str, list[float]]:
    """Single-row ``probe``-priority requests back to back for ``seconds``, beside ``clients``
    closed-loop clients of ``rows``-row ``load``-priority requests (none when ``load`` is None)."""
    rng = np.random.default_rng(int(time.time()))
    found: dict[str, list[float]] = {"probe": [], "load": []}
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def loading() -> None:
            while time.monotonic() < stop:
                found["load"].append(await one(session, token, random_rows(rng, rows), load or ""))

        async def probing() -> None:
            if load is not None:
                await asyncio.sleep(2.0)  # the load's queue fills first
            while time.monotonic() < stop:
                found["probe"].append(await one(session, token, random_rows(rng, 1), probe))
                await asyncio.sleep(0.02)

        tasks = [probing()] + ([loading() for _ in range(clients)] if load is not None else [])
        await asyncio.gather(*tasks)
    return found


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def batch_ms(engine: Any, since: datetime) -> dict[str, float]:
    """The batches the worker recorded since ``since``: the model's part (claim to predicted,
    the recorded span) and the whole cycle (one batch's start to the next's: pop, claim,
    predict, store, publish), median and p99 of each."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT started_at, EXTRACT(EPOCH FROM completed_at - started_at) FROM batches"
            " WHERE started_at >= :since ORDER BY started_at"
        ), {"since": since}).all()  # fmt: skip
    spans = [float(span) * 1000 for _, span in rows]
    cycles = [(b[0] - a[0]).total_seconds() * 1000 for a, b in zip(rows, rows[1:], strict=False)]
    return {"n": len(rows), **_quantiles("span", spans), **_quantiles("cycle", cycles)}


def _quantiles(name: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{name}_p50": float("nan"), f"{name}_p99": float("nan")}
    return {f"{name}_p50": statistics.median(values), f"{name}_p99": float(np.percentile(values, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    # Few clients of big requests: the worker's model time saturates, not the API's CPU.
    parser.add_argument("--low-clients", type=int, default=8)
    parser.add_argument("--low-rows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-priorities-"))
    base = f"http://127.0.0.1:{PORT}"
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args)}
    with scratch_database(ADMIN_URL, "predq_priorities") as database_url:
        stage = prepare(database_url, work)
        commands = {"api": granian("app.wsgi:app"), "worker": celery("workers.main", args.workers)}
        with running(commands, stage.env, f"{base}/readyz", work):
            asyncio.run(phase(base, stage.token, 3, "high", None, 0, 1))  # warm: the model loads
            idle = asyncio.run(phase(base, stage.token, args.seconds, "high", None, 0, 1))
            since = datetime.now(UTC)
            loaded = asyncio.run(phase(base, stage.token, args.seconds, "high", "low", args.low_clients,
                                       args.low_rows))  # fmt: skip
            batches = batch_ms(stage.engine, since)
            flat = asyncio.run(phase(base, stage.token, args.seconds, "normal", "normal", args.low_clients,
                                     args.low_rows))  # fmt: skip
    report |= {
        "idle_high": {"n": len(idle["probe"]), "p50_ms": p(idle["probe"], 50), "p99_ms": p(idle["probe"], 99)},
        "loaded_high": {"n": len(loaded["probe"]), "p50_ms": p(loaded["probe"], 50),
                        "p90_ms": p(loaded["probe"], 90), "p99_ms": p(loaded["probe"], 99),
                        "slowest_ms": sorted(round(x * 1000) for x in loaded["probe"])[-5:]},
        "loaded_low": {"n": len(loaded["load"]), "p50_ms": p(loaded["load"], 50), "p99_ms": p(loaded["load"], 99)},
        "batch_ms": batches,
        "no_priorities_single_row": {"n": len(flat["probe"]), "p50_ms": p(flat["probe"], 50),
                                     "p99_ms": p(flat["probe"], 99)},
        "no_priorities_bulk": {"n": len(flat["load"]), "p99_ms": p(flat["load"], 99)},
    }  # fmt: skip
    bound = report["idle_high"]["p99_ms"] + batches["cycle_p99"]
    report["target_ms"] = bound
    report["target_met"] = report["loaded_high"]["p99_ms"] <= bound
    print(json.dumps(report, indent=2))
    save_results("priorities", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
