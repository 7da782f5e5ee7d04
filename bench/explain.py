"""What ``"explain": true`` costs: explained and plain 100-row requests, alternating, one stack.

    python -m bench.explain [--pairs 3] [--concurrency 2] [--rows 100] [--seconds 30]

The benchmark's model (RandomForest, 100 trees, 20 features) behind predq's real processes,
as `make run` starts them: the API under granian, the online worker (plain rows) and the
bulk worker (explained rows), 2 processes each. Plain and explained points alternate,
the order flipping every pair, so a machine whose speed drifts favours neither. Prints
every point and the medians (rows/s, CPU per row), and writes bench/results/explain.{json,md}.
Whether plain requests pay anything for explanations existing is a comparison with the
code before them: ``python -m bench.ab --base <commit> --rows 100 --concurrency 8``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import loadgen
from bench.bulk import worker
from bench.run import (
    ADMIN_URL,
    MODEL,
    PORT,
    Point,
    alternating,
    granian,
    measure,
    prepare,
    rate_summary,
    report_of,
    running,
    save_results,
)
from scripts.local import scratch_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    # Few clients and long points: an explained 100-row request takes seconds on this forest.
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100, help="rows per request")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="the first explained batch imports shap")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-explain-"))
    url = f"http://127.0.0.1:{PORT}"
    points: dict[str, list[Point]] = {"plain": [], "explained": []}
    with scratch_database(ADMIN_URL, "predq_explain") as database_url:
        stage = prepare(database_url, work)
        commands = {
            "api": granian("app.wsgi:app"),
            "worker": worker("inference,maintenance,training", 2, "online"),
            "bulk": worker("bulk,explain", 2, "bulk"),
        }
        with running(commands, stage.env, f"{url}/readyz", work):
            for kind in alternating(list(points), args.pairs):
                scenario = loadgen.predq_scenario(MODEL, args.rows, stage.token, explain=kind == "explained")
                points[kind].append(
                    measure(kind, url, scenario, args.concurrency, args.rows, args.seconds, args.warmup)
                )

    summary = {kind: _summary(found) for kind, found in points.items()}
    ratio = summary["plain"]["rows_per_s"] / max(summary["explained"]["rows_per_s"], 1e-9)
    report = report_of(
        points,
        concurrency=args.concurrency,
        rows_per_request=args.rows,
        pairs=args.pairs,
        summary=summary,
        plain_over_explained=round(ratio, 1),
    )
    save_results("explain", report, _markdown(report))
    print("\n" + _markdown(report))
    return 0


def _summary(found: list[Point]) -> dict[str, float | list[float]]:
    return {
        **rate_summary(found),
        "cpu_ms_per_row": round(statistics.median(p.cpu_ms_per_prediction for p in found), 4),
        "p99_ms": round(statistics.median(p.p99_ms for p in found), 1),
    }


def _markdown(report: dict) -> str:
    lines = [
        f"Measured {report['measured_at']}: {report['rows_per_request']}-row requests,"
        f" {report['concurrency']} clients, medians of {report['pairs']} alternating runs each.",
        "",
        "| requests | rows/s (each run) | CPU ms per row | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, s in report["summary"].items():
        runs = ", ".join(f"{r:.0f}" for r in s["runs"])
        lines.append(
            f"| {kind} | {s['rows_per_s']:.0f} ({runs}) | {s['cpu_ms_per_row']:.3f} | {s['p99_ms']:.1f} |"
        )
    lines += ["", f"Plain rows/s over explained: {report['plain_over_explained']:.0f}×", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
