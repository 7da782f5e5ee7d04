"""What predq keeps in Redis per prediction, and a soak with the cache's Redis capped.

    python -m bench.capacity_redis [--entries 50000] [--seconds 60] [--clients 16]
                                   [--cache-cap-mb 8] [--repeat-share 0.2]

1. Bytes per cached output, before and after the compact form (app/predictions/items.py):
   ``--entries`` outputs of the benchmark's model written to an empty Redis under each
   format's keys (32 hex digits and JSON before; 22 base64 characters and MessagePack
   after) with the cache's TTL, and Redis's ``used_memory`` growth divided by their number;
   a single-row job's finished view likewise ("<owner>|<json>" before, MessagePack after).
2. A soak: the benchmark's stack (the API under granian, a worker with 2 processes), the
   queue's Redis as ever (BENCH_REDIS_URL, noeviction) and the cache and result views in
   a Redis of their own capped at ``--cache-cap-mb`` with allkeys-lru (CACHE_REDIS_URL, as
   docker-compose runs it); ``--clients`` closed-loop clients submit one row each and wait
   (``?wait=10``, then polls), a ``--repeat-share`` of rows drawn from 500 already sent
   (the cache's hits). Reports the cache Redis's largest ``used_memory`` against its cap
   (sampled every 0.25 s), its evictions, the cache hit rate, cache writes skipped, errors
   (an answer other than 200/202) and lost (jobs accepted but not succeeded in the
   database once the load stops and the queue drains).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from redis import Redis
from sqlalchemy import text

from app.predictions.items import encode_output, encode_view
from app.predictions.queue import cache_keys
from bench.run import ADMIN_URL, MODEL, PORT, REDIS_URL, celery, granian, prepare, running
from scripts.local import free_port, scratch_database

CACHE_TTL = 86400


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server of the bench's own on a free port, keeping nothing on disk."""
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            Redis.from_url(url).ping()
            return proc, url
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def outputs_of(model: Any, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rows = np.random.default_rng(7).normal(0, 1.5, size=(n, model.n_features_in_)).round(6)
    classes = [str(c) for c in model.classes_]
    proba = model.predict_proba(rows)
    predictions = model.classes_.take(np.argmax(proba, axis=1)).tolist()
    outputs = [{"prediction": p, "probabilities": dict(zip(classes, ps, strict=True))}
               for p, ps in zip(predictions, proba.tolist(), strict=True)]  # fmt: skip
    return rows, outputs


def bytes_per_entry(redis: Redis, entries: dict[str, bytes]) -> float:
    redis.flushall()
    before = redis.info("memory")["used_memory"]
    items = list(entries.items())
    for start in range(0, len(items), 1000):
        with redis.pipeline(transaction=False) as pipe:
            for key, value in items[start : start + 1000]:
                pipe.set(key, value, ex=CACHE_TTL)
            pipe.execute()
    grown = redis.info("memory")["used_memory"] - before
    redis.flushall()
    return grown / len(entries)


def measure_bytes(redis: Redis, model: Any, n: int) -> dict[str, Any]:
    import hashlib

    rows, outputs = outputs_of(model, n)
    old_prefix = f"predq:cache:{MODEL}:1:"
    old = {old_prefix + hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest(): orjson.dumps(output)
           for row, output in zip(rows, outputs, strict=True)}  # fmt: skip
    new = dict(zip(cache_keys(MODEL, 1, rows), map(encode_output, outputs), strict=True))
    view = {"id": "6f0c7e0a-3b7b-4a7e-9d7e-2d7b1c1f0a11", "status": "succeeded", "done": True,
            "model": {"name": MODEL, "version": 1}, "outputs": [outputs[0]], "error": None, "priority": "normal",
            "deadline": None, "created_at": "2026-12-05T10:00:00.123456+00:00",
            "completed_at": "2026-12-05T10:00:00.134567+00:00"}  # fmt: skip
    view_keys = [f"predq:result:{i:08x}-3b7b-4a7e-9d7e-2d7b1c1f0a11" for i in range(n)]
    old_view, new_view = b"1|" + orjson.dumps(view), encode_view(1, view)
    return {
        "entries": n,
        "value_bytes": {"before": len(next(iter(old.values()))), "after": len(next(iter(new.values())))},
        "key_bytes": {"before": len(next(iter(old))), "after": len(next(iter(new)))},
        "redis_bytes_per_cached_output": {"before": bytes_per_entry(redis, old), "after": bytes_per_entry(redis, new)},
        "view_bytes": {"before": len(old_view), "after": len(new_view)},
        "redis_bytes_per_result_view": {
            "before": bytes_per_entry(redis, dict.fromkeys(view_keys, old_view)),
            "after": bytes_per_entry(redis, dict.fromkeys(view_keys, new_view)),
        },
    }  # fmt: skip


class Soak:
    """Closed-loop single-row clients; counts answers, errors and the ids of accepted jobs."""

    def __init__(self, base: str, token: str, n_features: int, repeat_share: float) -> None:
        self.base, self.auth, self.n_features, self.repeat_share = (
            base,
            {"Authorization": f"Bearer {token}"},
            n_features,
            repeat_share,
        )
        self.pool = np.random.default_rng(1).normal(0, 1.5, size=(500, n_features)).round(6).tolist()
        self.accepted: list[str] = []
        self.statuses: dict[int, int] = {}
        self.exceptions = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def client(self, seed: int) -> None:
        rng = np.random.default_rng(1000 + seed)
        with httpx.Client(base_url=self.base, headers=self.auth, timeout=60) as http:
            while not self.stop.is_set():
                row = (
                    self.pool[rng.integers(500)]
                    if rng.random() < self.repeat_share
                    else rng.normal(0, 1.5, self.n_features).round(6).tolist()
                )
                tick = time.perf_counter()
                try:
                    response = http.post(f"/v1/models/{MODEL}/predictions?wait=10", json={"inputs": [row]})
                    job = response.json()
                    if response.status_code in (200, 202):
                        while job["status"] not in ("succeeded", "failed"):
                            job = http.get(f"/v1/predictions/{job['id']}?wait=10").json()
                except (httpx.HTTPError, ValueError, KeyError):
                    with self.lock:
                        self.exceptions += 1
                    continue
                with self.lock:
                    self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                    if response.status_code in (200, 202):
                        self.accepted.append(job["id"])
                        self.latencies.append(time.perf_counter() - tick)  # fmt: skip


def metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    found = 0.0
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        found += sum(s.value for s in family.samples if s.name == name)
    return found


def soak(args: argparse.Namespace, stage: Any, cache_url: str, work: Path) -> dict[str, Any]:
    cache = Redis.from_url(cache_url)
    cap = args.cache_cap_mb * 1024 * 1024
    cache.config_set("maxmemory", cap)
    cache.config_set("maxmemory-policy", "allkeys-lru")
    worker_metrics = f"127.0.0.1:{free_port()}"
    env = stage.env | {"CACHE_REDIS_URL": cache_url, "WORKER_METRICS_BIND": worker_metrics}
    base = f"http://127.0.0.1:{PORT}"
    commands = {"api": granian("app.wsgi:app"), "worker": celery("workers.main", 2)}
    with running(commands, env, f"{base}/readyz", work):
        load = Soak(base, stage.token, stage.model.n_features_in_, args.repeat_share)
        threads = [threading.Thread(target=load.client, args=(i,)) for i in range(args.clients)]
        samples: list[int] = []
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < args.seconds:
            samples.append(cache.info("memory")["used_memory"])
            time.sleep(0.25)
        load.stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        hits = metric(f"{base}/metrics", "predq_cache_hits_total")
        misses = metric(f"{base}/metrics", "predq_cache_misses_total")
        write_errors = metric(f"http://{worker_metrics}/metrics", "predq_cache_write_errors_total")
        write_errors += metric(f"{base}/metrics", "predq_cache_write_errors_total")
        lost = lost_jobs(stage.engine, load.accepted)
    queue = Redis.from_url(REDIS_URL).info()
    stats = cache.info()
    return {
        "seconds": round(elapsed, 1), "clients": args.clients, "cache_cap_bytes": cap,
        "predictions": len(load.accepted), "predictions_per_s": round(len(load.accepted) / elapsed, 1),
        "p50_ms": round(statistics.median(load.latencies) * 1000, 1) if load.latencies else None,
        # Redis evicts before each command, so its last write may pass the cap by its own size.
        "cache_max_used_bytes": max(samples), "cache_over_cap_bytes": max(0, max(samples) - cap),
        "cache_evicted_keys": stats["evicted_keys"], "cache_keys_at_end": cache.dbsize(),
        "cache_hit_rate": round(hits / max(hits + misses, 1), 3), "cache_write_errors": write_errors,
        "queue_evicted_keys": queue["evicted_keys"],
        "errors": sum(n for status, n in load.statuses.items() if status not in (200, 202)) + load.exceptions,
        "statuses": load.statuses, "lost": lost,
    }  # fmt: skip


def lost_jobs(engine: Any, accepted: list[str], grace: float = 60.0) -> int:
    """Accepted jobs not succeeded in the database once the queue has had ``grace`` s to drain."""
    deadline = time.monotonic() + grace
    while True:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'succeeded' AND id = ANY(:ids)"),
                                {"ids": accepted}).scalar_one()  # fmt: skip
        if done == len(set(accepted)) or time.monotonic() > deadline:
            return len(set(accepted)) - done
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cache-cap-mb", type=int, default=8)
    parser.add_argument("--repeat-share", type=float, default=0.2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predq-capacity-"))
    (work / "cache-redis").mkdir()
    proc, cache_url = start_redis(work / "cache-redis")
    try:
        with scratch_database(ADMIN_URL, "predq_capacity") as database_url:
            stage = prepare(database_url, work)
            sizes = measure_bytes(Redis.from_url(cache_url), stage.model, args.entries)
            print(orjson.dumps(sizes, option=orjson.OPT_INDENT_2).decode(), flush=True)
            result = soak(args, stage, cache_url, work)
            print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    finally:
        proc.terminate()
        proc.wait()
    over = result["cache_over_cap_bytes"] > result["cache_cap_bytes"] // 100
    return 0 if result["lost"] == 0 and result["errors"] == 0 and not over else 1


if __name__ == "__main__":
    raise SystemExit(main())
