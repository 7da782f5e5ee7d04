"""Which HTTP server under the same Flask app: gunicorn (gthread) or granian (Rust, WSGI).

    python -m bench.servers [--pairs 3] [--concurrency 64] [--seconds 10]

In one run, alternating the two servers (the order flips every pair, so neither always
runs first on a machine whose speed drifts): bare Flask (`bench/baseline/hello.py`) and
predq with single-row submit-and-wait clients, each under the same processes and threads.
Prints every point and the medians per server.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import loadgen
from bench.run import (
    ADMIN_URL,
    MODEL,
    PORT,
    SERVERS,
    Point,
    alternating,
    celery,
    measure,
    medians,
    prepare,
    running,
)
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
        for server in alternating(list(SERVERS), args.pairs):
            serve = SERVERS[server]
            if args.only in (None, "flask"):
                with running({"api": serve("bench.baseline.hello:app")}, stage.env, f"{base}/hello", work):
                    point = measure(f"flask/{server}", base, loadgen.hello_scenario(), args.concurrency, 1,
                                    args.seconds, args.warmup)  # fmt: skip
                points.setdefault(("flask", server), []).append(point)
            if args.only in (None, "predq"):
                commands = {"api": serve("app.wsgi:app"), "worker": celery("workers.main", 2)}
                with running(commands, stage.env, f"{base}/readyz", work):
                    scenario = loadgen.predq_scenario(MODEL, 1, stage.token)
                    point = measure(f"predq/{server}", base, scenario, args.concurrency, 1,
                                    args.seconds, args.warmup)  # fmt: skip
                points.setdefault(("predq", server), []).append(point)
    print("\nmedians:")
    for (app, server), found in sorted(points.items()):
        print(medians(f"{app} under {server}", found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
