"""What one prediction costs in counts, this tree against an earlier commit: the measures a
busy machine's noise does not move.

    python -m bench.counts [--base 408e9fb] [--head REV] [--requests 2000] [--concurrency 16] [--rows 1]
                           [--pairs 1] [--warmup 200] [--api "python -m app.serve"]

Runs the API and worker of each tree (``--head``: a commit instead of this working tree) in turn (as ``bench.ab`` does: the same database,
Redis, model and key) under a fixed number of submit-and-wait requests, and prints per
prediction, side by side: Redis's own count of each command (``INFO commandstats``, the
commands Lua scripts run included) and its time in them; what the API and the workers asked
for, counted inside each process (bench/counting/sitecustomize.py: SQL statements by text,
BEGIN/COMMIT, Redis round trips and commands by name, scripts by name, Celery messages);
and the CPU seconds of the API, workers, Redis and PostgreSQL processes (from /proc). The
batches per prediction (``INSERT INTO batches``) say how large the batches were: per-batch
costs scale with it, and it moves with the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop
from redis import Redis

from bench import loadgen
from bench.run import ADMIN_URL, BIN, MODEL, PORT, REDIS_URL, celery, cpu_by_kind, prepare, running
from scripts.local import ROOT, scratch_database

COUNTING = ROOT / "bench" / "counting"
#: Time for every process's counts to reach its file (written every 0.2 s) and the queue to go idle.
SETTLE_SECONDS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="408e9fb", help="the commit to compare against (git rev)")
    parser.add_argument("--head", help="a commit to measure instead of this working tree (git rev)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--pairs", type=int, default=1, help="runs of each tree (medians)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the counted ones")
    parser.add_argument("--api", default="python -m app.serve", help="the API's command, run in each tree")
    parser.add_argument("--top", type=int, default=60, help="rows per table (the largest differences)")
    args = parser.parse_args()

    # A SIGTERM still stops the servers and removes the worktrees (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="predq-counts-"))
    revs = {f"base {args.base}": args.base} | ({args.head: args.head} if args.head else {})
    trees = {name: work / f"tree-{i}" for i, name in enumerate(revs)}
    for name, rev in revs.items():
        subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), rev], cwd=ROOT, check=True)
    worktrees = list(trees.values())
    if not args.head:
        trees["this tree"] = ROOT
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    api = shlex.split(args.api)
    api[0] = str(BIN / api[0])
    url = f"http://127.0.0.1:{PORT}"
    try:
        with scratch_database(ADMIN_URL, "predq_counts") as database_url:
            stage = prepare(database_url, work)
            for run, name in enumerate(_alternating(list(trees), args.pairs)):
                tree = trees[name]
                counts_dir = work / f"counts-{run}"
                counts_dir.mkdir()
                env = stage.env | {"PYTHONPATH": f"{tree}:{COUNTING}", "PREDQ_COUNT_DIR": str(counts_dir)}
                entry = "workers.main" if (tree / "workers" / "main.py").exists() else "workers"
                commands = {"api": api, "worker": celery(entry, 2)}
                with running(commands, env, f"{url}/readyz", work, cwd=tree):
                    scenario = loadgen.predq_scenario(MODEL, args.rows, stage.token)
                    found[name].append(measure(url, scenario, args, counts_dir, seed=run))
                print(f"  {name}: {found[name][-1]['predictions']:.0f} predictions", flush=True)
    finally:
        for tree in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    report(found, args)
    return 0


def _alternating(names: list[str], pairs: int) -> list[str]:
    return [name for pair in range(pairs) for name in (names if pair % 2 == 0 else names[::-1])]


def measure(
    url: str, scenario: loadgen.Scenario, args: argparse.Namespace, counts_dir: Path, seed: int
) -> dict[str, float]:
    """One tree's counts per prediction over ``args.requests`` requests after a warm-up."""
    redis = Redis.from_url(REDIS_URL)
    load = loadgen.closed_loop
    uvloop.run(load(url, scenario, args.concurrency, 120.0, seed=1000 + seed, rounds=args.warmup))
    time.sleep(SETTLE_SECONDS)
    before = snapshot(redis, counts_dir)
    tick = time.monotonic()
    result = uvloop.run(load(url, scenario, args.concurrency, 600.0, seed=2000 + seed, rounds=args.requests))
    seconds = time.monotonic() - tick
    time.sleep(SETTLE_SECONDS)
    after = snapshot(redis, counts_dir)
    n = max(result.predictions, 1)
    per = {key: (after.get(key, 0.0) - before.get(key, 0.0)) / n for key in after.keys() | before.keys()}
    per = {key: value for key, value in per.items() if abs(value) > 1e-9}
    per["predictions"] = result.predictions
    per["errors"] = result.errors
    per["predictions/s (noisy)"] = result.predictions / seconds
    return per


def snapshot(redis: Redis, counts_dir: Path) -> dict[str, float]:
    """Cumulative counts now: Redis's commandstats, each process's own counts, CPU by kind."""
    out: dict[str, float] = {}
    for command, stats in redis.info("commandstats").items():
        name = command.removeprefix("cmdstat_")
        out[f"redis-server calls {name}"] = stats["calls"]
        out[f"redis-server usec {name}"] = stats["usec"]
    for path in counts_dir.glob("*.json"):
        kind = path.name.split("-", 1)[0]
        for key, value in json.loads(path.read_text()).items():
            out[f"{kind}: {key}"] = out.get(f"{kind}: {key}", 0) + value
    cpu: Counter[str] = Counter()
    for kind, seconds in cpu_by_kind().values():
        cpu[kind] += seconds
    for kind, seconds in cpu.items():
        out[f"cpu ms {kind}"] = 1000 * seconds
    return out


def report(found: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    names = list(found)
    medians = {name: _medians(runs) for name, runs in found.items()}
    keys = set().union(*(m.keys() for m in medians.values()))
    print(f"\nper prediction: {args.requests} requests of {args.rows} row(s), {args.concurrency} clients, "
          f"medians of {args.pairs} run(s) per tree")  # fmt: skip
    sections = [
        ("totals", lambda k: k in _TOTALS),
        ("CPU ms per prediction, by process", lambda k: k.startswith("cpu ms")),
        ("Redis server: calls (scripts' commands included)", lambda k: k.startswith("redis-server calls")),
        ("Redis server: usec", lambda k: k.startswith("redis-server usec")),
        ("API process", lambda k: k.startswith("api:")),
        ("worker processes", lambda k: k.startswith("workers:")),
    ]
    for title, wanted in sections:
        rows = sorted(
            (k for k in keys if wanted(k)), key=lambda k: -max(abs(m.get(k, 0)) for m in medians.values())
        )
        if not rows:
            continue
        print(f"\n{title:<92}" + "".join(f"{name[:14]:>15}" for name in names))
        for key in rows[: args.top]:
            print(f"  {key[:90]:<90}" + "".join(f"{medians[name].get(key, 0.0):15.3f}" for name in names))


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*(run.keys() for run in runs))
    medians = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in keys}
    # Totals that sum a table's rows, for a first look.
    medians["redis-server calls (all)"] = sum(
        v for k, v in medians.items() if k.startswith("redis-server calls ")
    )
    medians["cpu ms (all)"] = sum(v for k, v in medians.items() if k.startswith("cpu ms "))
    for kind in ("api", "workers"):
        medians[f"{kind} sql statements"] = sum(
            v for k, v in medians.items() if k.startswith(f"{kind}: sql ") and " rows " not in k
        )
        medians[f"{kind} BEGIN+COMMIT+ROLLBACK"] = sum(
            medians.get(f"{kind}: pgcmd {word}", 0.0) for word in ("BEGIN", "COMMIT", "ROLLBACK")
        )
    medians["batches (INSERT INTO batches)"] = sum(
        v for k, v in medians.items() if k.startswith("workers: sql INSERT INTO batches")
    )
    return medians


_TOTALS = {
    "predictions", "errors", "predictions/s (noisy)", "redis-server calls (all)", "cpu ms (all)",
    "api sql statements", "workers sql statements", "api BEGIN+COMMIT+ROLLBACK",
    "workers BEGIN+COMMIT+ROLLBACK", "batches (INSERT INTO batches)", "api: redis round trips",
    "workers: redis round trips",
}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
