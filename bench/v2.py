"""The Open Inference Protocol's cost: /v2 infer beside predq's own requests, one stack.

    python -m bench.v2 [--pairs 3] [--seconds 15] [--big-clients 2] [--small-clients 8]

The benchmark's model (RandomForest, 100 trees, 20 features) behind predq's real processes
(the API under granian, the online worker with 2 processes). Two comparisons, each pair of
points alternating and the order flipping every pair: 1,000-row requests as V2 binary tensor
data (one FP64 tensor [1000, 20], outputs binary) against the same rows as an Arrow IPC stream
on /v1; single-row requests as V2 binary tensor data against /v1 submit-and-wait (JSON,
``?wait=30``). Prints every point and the medians, and writes bench/results/v2.{json,md}.
Targets (issue 34): each V2 side >= 0.9x the rows/s of its /v1 twin.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    MODEL,
    PORT,
    Point,
    alternating,
    granian,
    measure,
    predq_commands,
    prepare,
    rate_summary,
    report_of,
    running,
    save_results,
)
from scripts.local import scratch_database

TARGET = 0.9


def v2_scenario(model: str, rows_per_request: int, token: str) -> loadgen.Scenario:
    """POST /v2/models/{model}/infer with the rows as binary tensor data, the outputs binary."""
    header = {
        "inputs": [{"name": "input-0", "shape": [rows_per_request, loadgen.N_FEATURES], "datatype": "FP64",
                    "parameters": {"binary_data_size": 8 * rows_per_request * loadgen.N_FEATURES}}],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    encoded = orjson.dumps(header)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(encoded)),
    }

    async def round_trip(session: aiohttp.ClientSession, rng: np.random.Generator) -> int:
        rows = rng.normal(0, 1.5, size=(rows_per_request, loadgen.N_FEATURES)).round(6)
        async with session.post(
            f"/v2/models/{model}/infer", data=encoded + rows.tobytes(), headers=headers
        ) as r:
            answer = await r.read()
            if r.status != 200:
                return 0
        length = int(r.headers["Inference-Header-Content-Length"])
        outputs = orjson.loads(answer[:length])["outputs"]
        return int(outputs[0]["shape"][0])

    return round_trip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--big-clients", type=int, default=2, help="clients sending 1,000-row requests")
    parser.add_argument("--small-clients", type=int, default=8, help="clients sending single-row requests")
    parser.add_argument(
        "--only", choices=["1000", "1"], help="one comparison alone (1,000-row or single-row)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-v2-"))
    url = f"http://127.0.0.1:{PORT}"
    points: dict[str, list[Point]] = {}
    with scratch_database(ADMIN_URL, "predq_v2bench") as database_url:
        stage = prepare(database_url, work)
        scenarios: dict[str, tuple[Callable[[], loadgen.Scenario], int, int]] = {
            "arrow 1000": (lambda: loadgen.predq_arrow_scenario(MODEL, 1000, stage.token), 1000, args.big_clients),
            "v2 1000": (lambda: v2_scenario(MODEL, 1000, stage.token), 1000, args.big_clients),
            "v1 1": (lambda: loadgen.predq_scenario(MODEL, 1, stage.token), 1, args.small_clients),
            "v2 1": (lambda: v2_scenario(MODEL, 1, stage.token), 1, args.small_clients),
        }  # fmt: skip
        commands = predq_commands() | {"api": granian("app.wsgi:app")}
        with running(commands, stage.env, f"{url}/readyz", work):
            pairs = [["arrow 1000", "v2 1000"], ["v1 1", "v2 1"]]
            for pair in [p for p in pairs if args.only is None or p[0].endswith(f" {args.only}")]:
                for kind in alternating(pair, args.pairs):
                    make, rows, clients = scenarios[kind]
                    point = measure(kind, url, make(), clients, rows, args.seconds, args.warmup)
                    points.setdefault(kind, []).append(point)

    summary = {kind: _summary(found) for kind, found in points.items()}
    compared = {"v2 / arrow (1,000 rows)": ("v2 1000", "arrow 1000"), "v2 / v1 (1 row)": ("v2 1", "v1 1")}
    ratios = {
        name: summary[v2]["rows_per_s"] / summary[base]["rows_per_s"]
        for name, (v2, base) in compared.items()
        if v2 in summary
    }
    report = report_of(
        points,
        pairs=args.pairs,
        seconds=args.seconds,
        clients={"1000 rows": args.big_clients, "1 row": args.small_clients},
        command="python -m bench.v2 " + " ".join(sys.argv[1:]),
        summary=summary,
        ratios={name: round(value, 3) for name, value in ratios.items()},
        target=TARGET,
    )
    save_results("v2", report, _markdown(report))
    print("\n" + _markdown(report))
    return 0


def _summary(found: list[Point]) -> dict[str, float | list[float]]:
    return {
        **rate_summary(found),
        "p50_ms": round(statistics.median(p.p50_ms for p in found), 1),
        "cpu_ms_per_row": round(statistics.median(p.cpu_ms_per_prediction for p in found), 4),
        "errors": sum(p.errors for p in found),
    }


def _markdown(report: dict) -> str:
    lines = [
        f"Measured {report['measured_at']} on a shared 2-core machine (other sessions' work ran"
        f" beside it): medians of {report['pairs']} alternating runs of {report['seconds']:.0f} s each;"
        f" {report['clients']['1000 rows']} clients for 1,000-row requests, {report['clients']['1 row']}"
        " for single rows.",
        "",
        "| requests | rows/s (each run) | p50 ms | CPU ms per row | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, s in report["summary"].items():
        runs = ", ".join(f"{r:.0f}" for r in s["runs"])
        lines.append(
            f"| {kind} | {s['rows_per_s']:.0f} ({runs}) | {s['p50_ms']:.1f} | {s['cpu_ms_per_row']:.3f}"
            f" | {s['errors']} |"
        )
    lines.append("")
    for name, ratio in report["ratios"].items():
        verdict = "met" if ratio >= report["target"] else "NOT met"
        lines.append(f"- {name}: {ratio:.2f}x (target >= {report['target']}x: {verdict})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
