"""Where predq spends its CPU under load: py-spy on every API and worker process at once.

    python -m bench.profile [--concurrency 64] [--rows 1] [--arrow] [--seconds 15] [--top 35]

Starts the same stack as `make bench` (same model, key, gunicorn and worker settings),
drives closed-loop clients, and samples every gunicorn and Celery process with py-spy
(only the thread holding the GIL: Python's CPU time) while the load runs. Prints, per
kind of process, the functions with the most samples (inclusive, each stack counted once
per function) and the deepest predq frames, and keeps the raw stacks (flame-graph input)
in the work directory it names.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil
import uvloop

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    BIN,
    MODEL,
    PORT,
    busy_cpu_seconds,
    own_cpu_seconds,
    predq_commands,
    prepare,
    processes_by_kind,
    running,
)
from scripts.local import scratch_database

# py-spy reads Python processes only: the API's and the workers'.
SAMPLED = ("api", "workers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--arrow", action="store_true", help="send the rows as Arrow IPC streams, not JSON")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=35, help="functions listed per kind of process")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-profile-"))
    base = f"http://127.0.0.1:{PORT}"
    with scratch_database(ADMIN_URL, "predq_profile") as database_url:
        stage = prepare(database_url, work)
        with running(predq_commands(), stage.env, f"{base}/readyz", work):
            make = loadgen.predq_arrow_scenario if args.arrow else loadgen.predq_scenario
            scenario = make(MODEL, args.rows, stage.token)
            uvloop.run(loadgen.closed_loop(base, scenario, args.concurrency, 3.0, seed=1))  # warm up
            sampled = [(kind, proc) for kind, proc in processes_by_kind() if kind in SAMPLED]
            spies = [spy(found, args.seconds + 2, work) for found in sampled]
            busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
            result = uvloop.run(loadgen.closed_loop(base, scenario, args.concurrency, args.seconds, seed=2))
            server_cpu = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
            for proc, _ in spies:
                proc.wait()
    rate = result.predictions / result.seconds
    print(f"\n{rate:.0f} predictions/s, {1000 * server_cpu / max(result.predictions, 1):.2f} ms CPU per "
          f"prediction (everything but the load generator), {result.errors} errors\n")  # fmt: skip
    for kind in SAMPLED:
        summarize(kind, sorted(work.glob(f"{kind}-*.txt")), args.top)
    print(f"raw stacks (one file per process, flame-graph input): {work}")
    return 0


def spy(found: tuple[str, psutil.Process], seconds: float, work: Path) -> tuple[subprocess.Popen, Path]:
    kind, proc = found
    out = work / f"{kind}-{proc.pid}.txt"
    argv = [str(BIN / "py-spy") if (BIN / "py-spy").exists() else "py-spy", "record", "--pid", str(proc.pid), "--duration", str(int(seconds)),
            "--rate", "200", "--gil", "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def summarize(kind: str, files: list[Path], top: int) -> None:
    """Two views over all processes of one kind: the functions with the most samples
    (inclusive), and, per sample, the deepest predq frame and the call it was in."""
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue  # a frame name with a line break in it
            n = int(count)
            total += n
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += n
            ours[_deepest_own_call(frames)] += n
    print(f"== {kind}: {total} samples over {len(files)} processes ==")
    for frame, n in inclusive.most_common(top):
        print(f"{100 * n / max(total, 1):6.1f}%  {frame[:150]}")
    print(f"-- {kind}: deepest predq frame > what it called --")
    for frame, n in ours.most_common(top):
        print(f"{100 * n / max(total, 1):6.1f}%  {frame[:150]}")
    print()


def _deepest_own_call(frames: list[str]) -> str:
    own = [i for i, frame in enumerate(frames) if "(app/" in frame or "(workers/" in frame]
    if not own:
        return "(outside predq: server, framework, Celery)"
    i = own[-1]
    callee = frames[i + 1].split(" (")[0] if i + 1 < len(frames) else "(itself)"
    return f"{frames[i]} > {callee}"


if __name__ == "__main__":
    sys.exit(main())
