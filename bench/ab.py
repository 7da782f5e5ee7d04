"""predq against an earlier commit of itself, side by side: what one change bought.

    python -m bench.ab --base HEAD~1 [--pairs 3] [--concurrency 64] [--rows 1] [--seconds 10]
                       [--api "gunicorn app:create_app()"] [--compile] [--own-databases]
                       [--beside-bulk ROWS]

Checks ``--base`` out into a temporary worktree and runs predq's API and worker from it
and from this working tree in turn (the order flips every pair, so neither always runs
first on a machine whose speed drifts), each under the same load as `make bench`'s
points, against the same database, Redis, model and key. Both run in this virtualenv,
so ``--api`` must be a command both trees can run (gunicorn for a commit older than
app/serve.py). With ``--own-databases`` each tree runs against a database of its own,
migrated by its own migrations (a change to the schema: the other tree's code would not run
on it); the model and a key are registered in both. With ``--beside-bulk ROWS`` each tree also
runs a bulk worker, and each run measures twice: alone, then while a batch job of ROWS rows is
scored (bench.bulk's last point: the online tail a batch job costs). Prints every point and
the medians per tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    BIN,
    MODEL,
    PORT,
    Point,
    Stage,
    alternating,
    celery,
    count_database,
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
    parser.add_argument(
        "--own-databases", action="store_true", help="each tree on a database its own migrations built"
    )
    parser.add_argument(
        "--beside-bulk", type=int, default=0, metavar="ROWS",
        help="also measure while a batch job of ROWS rows is scored (and run a bulk worker)",
    )  # fmt: skip
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-ab-"))
    base_tree = work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
    api = shlex.split(args.api)
    api[0] = str(BIN / api[0])
    trees = {"this tree": ROOT, f"base {args.base}": base_tree}
    points: dict[str, list[Point]] = {name: [] for name in trees}
    beside: dict[str, list[Point]] = {name: [] for name in trees}
    big_file = work / "beside.parquet"
    if args.beside_bulk:
        from bench.bulk import write_file

        write_file(big_file, args.beside_bulk, seed=2)
    url = f"http://127.0.0.1:{PORT}"
    try:
        base_database = scratch_database(ADMIN_URL, "predq_ab_base") if args.own_databases else nullcontext()
        with scratch_database(ADMIN_URL, "predq_ab") as database_url, base_database as base_url:
            stage = prepare(database_url, work)
            if args.compile:
                from bench.compiled import compile_bench_model

                compile_bench_model(stage.env, MODEL)
            stages = {name: stage for name in trees}
            if base_url is not None:
                stages[f"base {args.base}"] = own_database(base_url, base_tree, stage)
            for name in alternating(list(trees), args.pairs):
                tree = trees[name]
                env = stages[name].env | {"PYTHONPATH": str(tree)}
                # Trees before workers/main.py load their worker as the package itself.
                entry = "workers.main" if (tree / "workers" / "main.py").exists() else "workers"
                commands = {"api": api, "worker": celery(entry, 2)}
                if args.beside_bulk:  # as bench.bulk runs them: online and bulk workers apart
                    env |= BULK_ENV
                    commands["worker"] += ["-Q", "inference,maintenance,training", "-n", "online@%h"]
                    commands["bulk"] = [*celery(entry, 2), "-Q", "bulk", "-n", "bulk@%h"]
                with running(commands, env, f"{url}/readyz", work, cwd=tree):
                    scenario = loadgen.predq_scenario(MODEL, args.rows, stages[name].token)
                    point = measure(
                        name, url, scenario, args.concurrency, args.rows, args.seconds, args.warmup
                    )
                    if args.beside_bulk:
                        with batch_job(url, stages[name].token, big_file):
                            beside[name].append(
                                measure(f"{name} + bulk", url, scenario, args.concurrency, args.rows,
                                        args.seconds, args.warmup)
                            )  # fmt: skip
                points[name].append(point)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)

    print(f"\nmedians of {args.pairs} runs, {args.concurrency} clients, {args.rows} rows/request:")
    for name, found in points.items():
        print(medians(name, found))
        if beside[name]:
            print(medians(f"{name} + bulk", beside[name]))
            alone = statistics.median(p.p99_ms for p in found)
            during = statistics.median(p.p99_ms for p in beside[name])
            print(f"  {'':<22} p99 during a batch job / alone: {during / alone:.2f}x")
    return 0


#: The bulk worker's settings in bench.bulk: 50,000-row chunks, files of any size.
BULK_ENV = {"BATCH_CHUNK_ROWS": "50000", "BATCH_MAX_BYTES": str(16 << 30), "WORKER_METRICS_BIND": ""}


@contextmanager
def batch_job(url: str, token: str, path: Path) -> Iterator[None]:
    """A batch job of ``path`` submitted (its upload read whole) and scored meanwhile; cancelled after."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:
        with open(path, "rb") as body:
            response = client.post(
                f"/v1/models/{MODEL}/batch-jobs?id_column=id",
                content=body,
                headers={"Content-Type": "application/vnd.apache.parquet"},
            )
        response.raise_for_status()
        job = response.json()["id"]
        try:
            yield
        finally:
            client.delete(f"/v1/batch-jobs/{job}")


def own_database(url: str, tree: Path, stage: Stage) -> Stage:
    """``stage`` on the database ``url``, migrated by ``tree``'s migrations, with the model and a
    key registered by ``tree``'s own code (its tables may differ from this tree's)."""
    from app.db import make_engine

    env = stage.env | {"DATABASE_URL": url, "PYTHONPATH": str(tree)}
    count_database(url)  # its backends' CPU counts, as this tree's database's does
    run = [sys.executable, "-c", _REGISTER, url, str(stage.artifact), MODEL]
    token = subprocess.run(run, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return dataclasses.replace(
        stage, env=env, engine=make_engine(url, 2), token=token.strip().splitlines()[-1]
    )


#: Run in the other tree: migrate, register the model, make a key, print its token. Modules
#: moved in "the house" (round two): both places are tried.
_REGISTER = """
import os, sys, uuid
from app.config import Settings
from app.db import make_engine
from app.migrate import upgrade
try:
    from app.access.auth import ApiKeys
    from app.registry.registry import Registry
except ImportError:
    from app.auth import ApiKeys
    from app.lifecycle.registry import Registry
url, artifact, model = sys.argv[1:4]
upgrade(url)
engine = make_engine(url, 2)
Registry(engine, Settings.from_env(dict(os.environ)).artifact_root).register(model, artifact)
print(ApiKeys(engine).create(f"bench-{uuid.uuid4().hex[:6]}", ["predict"], rate_limit="1000000/second")[1])
"""


if __name__ == "__main__":
    raise SystemExit(main())
