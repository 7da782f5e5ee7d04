"""Which HTTP server under the same Flask app: gunicorn (gthread) or granian (Rust, WSGI).

    python -m bench.servers [--pairs 3] [--concurrency 64] [--seconds 10]

In one run, alternating the two servers (the order flips every pair, so neither always
runs first on a machine whose speed drifts): bare Flask (`bench/baseline/hello.py`) and
predq with single-row submit-and-wait clients, each under the same processes and threads.
Prints every point and the medians per server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import loadgen
from bench.run import ADMIN_URL, MODEL, PORT, SERVERS, Point, celery, measure, prepare, running
from scripts.local import scratch_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--only", choices=["flask", "predq"], help="measure one app only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="predq-servers-"))
    base = f"http://127.0.0.1:{PORT}"
    points: dict[tuple[str, str], list[Point]] = {}
    with scratch_database(ADMIN_URL, "predq_servers") as database_url:
        stage = prepare(database_url, work)
        for pair in range(args.pairs):
            order = list(SERVERS) if pair % 2 == 0 else list(SERVERS)[::-1]
            for server in order:
                serve = SERVERS[server]
                if args.only in (None, "flask"):
                    with running(
                        {"api": serve("bench.baseline.hello:app")}, stage.env, f"{base}/hello", work
                    ):
                        point = measure(f"flask/{server}", base, loadgen.hello_scenario(), args.concurrency, 1,
                                        args.seconds, args.warmup)  # fmt: skip
                    points.setdefault(("flask", server), []).append(point)
                if args.only in (None, "predq"):
                    commands = {"api": serve("app.wsgi:app"), "worker": celery("workers", 2)}
                    with running(commands, stage.env, f"{base}/readyz", work):
                        scenario = loadgen.predq_scenario(MODEL, 1, stage.token)
                        point = measure(f"predq/{server}", base, scenario, args.concurrency, 1,
                                        args.seconds, args.warmup)  # fmt: skip
                    points.setdefault(("predq", server), []).append(point)
    print("\nmedians:")
    for (app, server), found in sorted(points.items()):
        rate = statistics.median(p.predictions_per_s for p in found)
        api = statistics.median((p.cpu_ms_by_process or {}).get("api", 0.0) for p in found)
        p99 = statistics.median(p.p99_ms for p in found)
        runs = ", ".join(f"{p.predictions_per_s:.0f}" for p in found)
        print(f"  {app:<6} {server:<9} {rate:8.0f}/s ({runs})  API CPU {api:.3f} ms  p99 {p99:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
