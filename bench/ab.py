"""predq against an earlier commit of itself, side by side: what one change bought.

    python -m bench.ab --base HEAD~1 [--pairs 3] [--concurrency 64] [--rows 1] [--seconds 10]
                       [--api "gunicorn app:create_app()"] [--compile]

Checks ``--base`` out into a temporary worktree and runs predq's API and worker from it
and from this working tree in turn (the order flips every pair, so neither always runs
first on a machine whose speed drifts), each under the same load as `make bench`'s
points, against the same database, Redis, model and key. Both run in this virtualenv,
so ``--api`` must be a command both trees can run (gunicorn for a commit older than
app/serve.py). Prints every point and the medians per tree.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
from pathlib import Path

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    BIN,
    MODEL,
    PORT,
    Point,
    alternating,
    celery,
    measure,
    medians,
    prepare,
    running,
)
from scripts.local import ROOT, scratch_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (git rev)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--api", default="python -m app.serve", help="the API's command, run in each tree")
    parser.add_argument(
        "--compile", action="store_true", help="compile the model first (this tree serves it compiled)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-ab-"))
    base_tree = work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
    api = shlex.split(args.api)
    api[0] = str(BIN / api[0])
    trees = {"this tree": ROOT, f"base {args.base}": base_tree}
    points: dict[str, list[Point]] = {name: [] for name in trees}
    url = f"http://127.0.0.1:{PORT}"
    try:
        with scratch_database(ADMIN_URL, "predq_ab") as database_url:
            stage = prepare(database_url, work)
            if args.compile:
                from bench.compiled import compile_bench_model

                compile_bench_model(stage.env, MODEL)
            for name in alternating(list(trees), args.pairs):
                tree = trees[name]
                env = stage.env | {"PYTHONPATH": str(tree)}
                # Trees before workers/main.py load their worker as the package itself.
                entry = "workers.main" if (tree / "workers" / "main.py").exists() else "workers"
                commands = {"api": api, "worker": celery(entry, 2)}
                with running(commands, env, f"{url}/readyz", work, cwd=tree):
                    scenario = loadgen.predq_scenario(MODEL, args.rows, stage.token)
                    point = measure(
                        name, url, scenario, args.concurrency, args.rows, args.seconds, args.warmup
                    )
                points[name].append(point)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)

    print(f"\nmedians of {args.pairs} runs, {args.concurrency} clients, {args.rows} rows/request:")
    for name, found in points.items():
        print(medians(name, found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
