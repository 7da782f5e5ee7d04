"""Closed-loop HTTP clients: each sends a request, waits for its result, then sends again.

A scenario is one client's round: it returns how many predictions it got (0 on error).
The latency of a round is submit-to-result, whatever polling it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import orjson

Scenario = Callable[[aiohttp.ClientSession, np.random.Generator], Awaitable[int]]
N_FEATURES = 20
ROUND_TIMEOUT = 60.0


@dataclass
class LoadResult:
    seconds: float
    predictions: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def random_rows(rng: np.random.Generator, n: int) -> list[list[float]]:
    # Fresh random rows: the cache never answers, every row reaches a model. numpy, because
    # the load generator shares the machine: 2,000 values drawn one by one in Python cost
    # ~1.5 ms per 100-row request, CPU the measured system would not get.
    return rng.normal(0, 1.5, size=(n, N_FEATURES)).round(6).tolist()


def predq_scenario(model: str, rows_per_request: int, token: str, explain: bool = False) -> Scenario:
    """POST ?wait=30 (one round trip when the queue is fast), then GET ?wait until done.

    With ``explain`` every request asks for its rows' explanations.
    """
    extra = {"explain": True} if explain else {}

    def body(rng: np.random.Generator) -> bytes:
        return orjson.dumps({"inputs": random_rows(rng, rows_per_request), **extra})

    return _submit_and_wait(model, token, "application/json", body)


def predq_arrow_scenario(model: str, rows_per_request: int, token: str) -> Scenario:
    """As predq_scenario, with the rows sent as an Arrow IPC stream (one column per feature)."""
    import pyarrow as pa

    names = [f"f{j}" for j in range(N_FEATURES)]

    def body(rng: np.random.Generator) -> bytes:
        X = rng.normal(0, 1.5, size=(rows_per_request, N_FEATURES)).round(6)
        table = pa.Table.from_arrays([pa.array(X[:, j]) for j in range(N_FEATURES)], names=names)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    return _submit_and_wait(model, token, "application/vnd.apache.arrow.stream", body)


def _submit_and_wait(
    model: str, token: str, content_type: str, body: Callable[[np.random.Generator], bytes]
) -> Scenario:
    auth = {"Authorization": f"Bearer {token}"}
    post_headers = auth | {"Content-Type": content_type}

    async def round_trip(session: aiohttp.ClientSession, rng: np.random.Generator) -> int:
        async with session.post(
            f"/v1/models/{model}/predictions?wait=30", data=body(rng), headers=post_headers
        ) as response:
            job = orjson.loads(await response.read())
            if response.status not in (200, 202):
                return 0
        while not job.get("done", job["status"] in ("succeeded", "failed")):
            async with session.get(f"/v1/predictions/{job['id']}?wait=30", headers=auth) as response:
                job = orjson.loads(await response.read())
        return len(job["outputs"]) if job["status"] == "succeeded" else 0

    return round_trip


def bentoml_scenario(rows_per_request: int = 1) -> Scenario:
    """POST /predict and read the probabilities in the answer (BentoML's synchronous API)."""
    headers = {"Content-Type": "application/json"}

    async def round_trip(session: aiohttp.ClientSession, rng: np.random.Generator) -> int:
        body = orjson.dumps({"inputs": random_rows(rng, rows_per_request)})
        async with session.post("/predict", data=body, headers=headers) as response:
            answer = orjson.loads(await response.read())
            return len(answer) if response.status == 200 else 0

    return round_trip


def tutorial_scenario(poll_interval: float = 0.02) -> Scenario:
    """POST, then poll GET /result/<id> every ``poll_interval`` until it is done."""

    async def round_trip(session: aiohttp.ClientSession, rng: np.random.Generator) -> int:
        body = orjson.dumps({"inputs": random_rows(rng, 1)})
        async with session.post(
            "/predict", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            if response.status != 202:
                return 0
            job_id = orjson.loads(await response.read())["id"]
        while True:
            async with session.get(f"/result/{job_id}") as response:
                if orjson.loads(await response.read())["status"] == "succeeded":
                    return 1
            await asyncio.sleep(poll_interval)

    return round_trip


def hello_scenario() -> Scenario:
    async def round_trip(session: aiohttp.ClientSession, rng: np.random.Generator) -> int:
        async with session.get("/hello") as response:
            await response.read()
            return 1 if response.status == 200 else 0

    return round_trip


async def closed_loop(
    base_url: str,
    scenario: Scenario,
    concurrency: int,
    seconds: float,
    rate: float | None = None,
    seed: int = 0,
    rounds: int | None = None,
) -> LoadResult:
    """Run ``concurrency`` clients for ``seconds``; with ``rate``, pace rounds to that many/s;
    with ``rounds``, stop once that many rounds have started (``seconds`` still bounds the run)."""
    result = LoadResult(seconds=seconds)
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=90)
    started = loop.time()
    stop = started + seconds
    issued = 0
    started_rounds = 0

    async def paced() -> None:
        nonlocal issued
        # Global schedule: round n may start at started + n / rate.
        due = started + issued / rate  # type: ignore[operator]
        issued += 1
        if due > loop.time():
            await asyncio.sleep(due - loop.time())

    async def client(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        nonlocal started_rounds
        while loop.time() < stop and (rounds is None or started_rounds < rounds):
            started_rounds += 1
            if rate:
                await paced()
                if loop.time() >= stop:
                    return
            tick = time.perf_counter()
            try:
                # A round that takes this long counts as an error rather than stalling the run.
                got = await asyncio.wait_for(scenario(session, rng), ROUND_TIMEOUT)
            except (TimeoutError, aiohttp.ClientError, KeyError, ValueError):
                got = 0
            result.requests += 1
            if got:
                result.predictions += got
                result.latencies.append(time.perf_counter() - tick)
            else:
                result.errors += 1

    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.seconds = loop.time() - started
    return result
