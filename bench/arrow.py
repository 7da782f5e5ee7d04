"""1,000-row Arrow requests against the model in process (issue 33's online many-row target).

    python -m bench.arrow [--pairs 3] [--clients 8] [--seconds 10] [--no-compiled] [--base REV]

In one run, on this machine, with the benchmark's model (RandomForest, 100 fully grown
trees, 20 features) and predq's real processes (the API under granian, an online worker
``-Q inference,maintenance,training`` with 2 processes, as ``bench.bulk`` runs them):
``--pairs`` times, the model's own speed (``predict_proba`` on 1,000-row batches in this
process, as the model was saved: one core), measured just before and just after
closed-loop clients each send 1,000-row requests as Arrow IPC streams (submit with
``?wait``, the answer read whole). Each pair gives a ratio (predq's rows/s over the
model's mean); the figure is their median. The ceiling beside it: predq's own forest path
(app/scoring/inference.py) on the same 1,000 rows in process. Then the same with the model
compiled (app/scoring/compiled.py: onnxruntime up to the crossover it measured), unless
``--no-compiled``. With ``--base REV`` each pair measures that commit's predq too (checked out
in a temporary worktree, the order flipped every pair), against the same database and model:
what a change bought, side by side (both commits must run on this tree's schema).

The load average is printed with every pair: the machine may be shared, and a ratio is
only as good as the quiet it was measured in. Writes bench/results/arrow.json; exits
non-zero when the uncompiled median misses 1.0x (unless --no-assert).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    BIN,
    MODEL,
    PORT,
    Stage,
    alternating,
    granian,
    measure,
    prepare,
    running,
    save_results,
)
from scripts.local import ROOT, scratch_database

ROWS = 1000
BASE_URL = f"http://127.0.0.1:{PORT}"


def online_worker() -> list[str]:
    return [str(BIN / "celery"), "-A", "workers.main", "worker", "-Q", "inference,maintenance,training",
            "-n", "online@%h", "--concurrency=2", "--loglevel=WARNING"]  # fmt: skip


def in_process(predict: Any, seconds: float = 2.0) -> float:
    """Rows per second of ``predict`` on 1,000-row batches, for about ``seconds`` (median call)."""
    X = np.random.default_rng(0).normal(0, 1.5, size=(ROWS, loadgen.N_FEATURES))
    predict(X)
    timings: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop or len(timings) < 5:
        tick = time.perf_counter()
        predict(X)
        timings.append(time.perf_counter() - tick)
    return ROWS / statistics.median(timings)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def pairs(
    stage: Stage, args: argparse.Namespace, label: str, work: Path, trees: dict[str, Path]
) -> dict[str, list[dict[str, float]]]:
    """``args.pairs`` measurements of the model in process and of predq running from each tree
    (alternating, the order flipped every pair), by tree."""
    from app.registry.signature import signature_of
    from app.scoring.inference import predict_arrays

    signature = signature_of(stage.model)
    scenario = loadgen.predq_arrow_scenario(MODEL, ROWS, stage.token)
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    commands = {"api": granian("app.wsgi:app"), "worker": online_worker()}
    for pair, name in enumerate(alternating(list(trees), args.pairs)):
        tree, env = trees[name], stage.env | {"WORKER_METRICS_BIND": "", "PYTHONPATH": str(trees[name])}
        with running(commands, env, f"{BASE_URL}/readyz", work, cwd=tree):
            ours = in_process(lambda X: predict_arrays(stage.model, signature, X))
            before = in_process(stage.model.predict_proba)
            point = measure(
                f"{label}, {name}", BASE_URL, scenario, args.clients, ROWS, args.seconds, args.warmup
            )
            # The model's speed on either side of predq's, so a machine whose speed drifts
            # moves both alike.
            model = statistics.mean([before, in_process(stage.model.predict_proba)])
            found[name].append({
                "predq_rows_per_s": round(point.predictions_per_s), "p50_ms": round(point.p50_ms, 1),
                "errors": point.errors, "in_process_rows_per_s": round(model),
                "predq_forest_path_rows_per_s": round(ours), "ratio": round(point.predictions_per_s / model, 3),
                "cpu_ms_per_request": {k: round(v * ROWS, 2) for k, v in (point.cpu_ms_by_process or {}).items()},
            })  # fmt: skip
            print(f"    {name}, run {pair // len(trees) + 1}: {found[name][-1]['ratio']:.2f}x ({point.predictions_per_s:,.0f} against "
                  f"{model:,.0f} rows/s in process; predq's forest path {ours:,.0f}); {load()}", flush=True)  # fmt: skip
    return found


def summary(label: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ratio": statistics.median(p["ratio"] for p in found),
        "predq_rows_per_s": statistics.median(p["predq_rows_per_s"] for p in found),
        "in_process_rows_per_s": statistics.median(p["in_process_rows_per_s"] for p in found),
        "predq_forest_path_rows_per_s": statistics.median(p["predq_forest_path_rows_per_s"] for p in found),
        "pairs": found,
        "label": label,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=3, help="alternating measurements per backend")
    parser.add_argument("--clients", type=int, default=8, help="clients, each sending 1,000-row requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--no-compiled", action="store_true", help="leave out the compiled model")
    parser.add_argument("--no-assert", action="store_true", help="exit 0 even when the target is missed")
    parser.add_argument("--base", help="a commit to measure beside this tree (git rev)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-bench-arrow-"))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_at_start": load(),
    }
    print(f"{load()} at the start", flush=True)
    trees = {"this tree": ROOT}
    if args.base:
        trees[f"base {args.base}"] = work / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(work / "base"), args.base], cwd=ROOT, check=True
        )
    try:
        with scratch_database(ADMIN_URL, "predq_bench_arrow") as database_url:
            stage = prepare(database_url, work)
            print(f"1,000-row Arrow requests, {args.clients} clients, not compiled:", flush=True)
            for name, found in pairs(stage, args, "arrow", work, trees).items():
                report["sklearn" if name == "this tree" else name] = summary(f"not compiled, {name}", found)
            if not args.no_compiled:
                from bench.compiled import compile_bench_model

                report["compiled_record"] = record = compile_bench_model(stage.env, MODEL)
                print(
                    f"the same, compiled (onnxruntime up to {record.get('crossover_rows')} rows):", flush=True
                )
                found = pairs(stage, args, "arrow compiled", work, {"this tree": ROOT})["this tree"]
                report["compiled"] = summary("compiled", found)
    finally:
        if args.base:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(work / "base")], cwd=ROOT, check=False
            )
    report["load_at_end"] = load()
    save_results("arrow", report)
    for key in [k for k in report if isinstance(report[k], dict) and "ratio" in report[k]]:
        s = report[key]
        print(f"1,000-row Arrow requests ({s['label']}): {s['ratio']:.2f}x in-process predict_proba "
              f"(median of {len(s['pairs'])} pairs: {s['predq_rows_per_s']:,.0f} against "
              f"{s['in_process_rows_per_s']:,.0f} rows/s; predq's forest path in process "
              f"{s['predq_forest_path_rows_per_s']:,.0f} rows/s)")  # fmt: skip
    print(f"{report['load_at_start']} at the start, {report['load_at_end']} at the end")
    return 0 if report["sklearn"]["ratio"] >= 1.0 or args.no_assert else 1


if __name__ == "__main__":
    sys.exit(main())
