"""What predq keeps in Redis per prediction, and the issue's soak with both Redis servers capped.

    python -m bench.capacity_redis [--minutes 30] [--clients 64] [--queue-cap-mb 128]
                                   [--cache-cap-mb 128] [--repeat-share 0.2] [--entries 20000]
                                   [--no-bytes] [--name capacity_redis]

1. Bytes per cached output, before and after the compact form (app/predictions/items.py):
   ``--entries`` outputs of the benchmark's model written to an empty Redis under each
   format's keys (32 hex digits and JSON before; 22 base64 characters and MessagePack
   after) with the cache's TTL, and Redis's ``used_memory`` growth divided by their number;
   a single-row job's finished view likewise ("<owner>|<json>" before, MessagePack after).
   ``--no-bytes`` leaves this out.
2. The soak (issue 31): two redis-servers of the bench's own, as docker-compose runs them:
   the queue's (REDIS_URL, also Celery's broker) with ``maxmemory`` ``--queue-cap-mb`` and
   ``noeviction`` (a queued row is never evicted: at the cap Redis refuses writes and submits
   get 503), the cache's (CACHE_REDIS_URL: output cache and result views) with ``maxmemory``
   ``--cache-cap-mb`` and ``allkeys-lru``. The production processes on them (the API under
   granian, the online worker with 2 processes, beat and its sweeper), and ``--clients``
   closed-loop asyncio clients, each submitting one row at a time (``?wait=10``, then
   long-polls until the job is done): as many as saturate the service (the benchmark's single-
   row peak is at 64). A ``--repeat-share`` of rows is drawn from 500 already sent (the cache's
   hits). Every 2 s both Redis servers' ``used_memory`` is sampled; the RSS of every process
   (API, worker, beat, both Redis servers, PostgreSQL's backends for the bench's database, the
   load generator) is taken at start, middle and end. Reported: predictions and their rate,
   errors (any answer to a submit or poll other than 200/202, any connection error), lost (an
   accepted job that is not ``succeeded`` in the database once the load stops: every accepted
   job is polled until it is done, and one not done after 120 s is polled again at the end),
   wrong outputs (every succeeded job's output against the model's own ``predict_proba``,
   called in this process on the same rows), each Redis's largest ``used_memory`` (sampled,
   and Redis's own ``used_memory_peak``) against its cap, evictions, the cache hit rate.
   Writes ``bench/results/{--name}.{json,md}``; exits non-zero unless 0 errors, 0 lost, 0
   wrong and neither Redis above its cap by more than one command's writes (1%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson
import psutil
from redis import Redis
from sqlalchemy import text

from app.predictions.items import encode_output, encode_view
from app.predictions.queue import cache_keys
from app.processes import PROCESSES
from bench.run import ADMIN_URL, BIN, MODEL, PORT, RESULTS, granian, prepare, running
from scripts.local import free_port, scratch_database

try:  # bench/requirements.txt's loop when installed, else asyncio's own
    from uvloop import run as run_loop
except ImportError:
    from asyncio import run as run_loop

CACHE_TTL = 86400
MIB = 1024 * 1024


def start_redis(directory: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """A redis-server of the bench's own on a free port, keeping nothing on disk; ``options``
    are more of its flags (``--maxmemory``, ``--maxmemory-policy``)."""
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(directory), *options]  # fmt: skip
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


# -- the soak ------------------------------------------------------------------------------


class Checker:
    """Every succeeded job's output against the model's own ``predict_proba``, called in this
    process on the same rows, a few thousand at a time in a thread of its own (the clients
    never wait for it, and at most a batch of rows is held)."""

    BATCH = 4096

    def __init__(self, model: Any) -> None:
        self.model, self.classes = model, [str(c) for c in model.classes_]
        self.pending: list[tuple[list[float], Any]] = []
        self.batches: queue.Queue[list[tuple[list[float], Any]] | None] = queue.Queue()
        self.checked, self.wrong = 0, 0
        self.examples: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, row: list[float], output: Any) -> None:
        self.pending.append((row, output))
        if len(self.pending) >= self.BATCH:
            self.batches.put(self.pending)
            self.pending = []

    def _run(self) -> None:
        while (batch := self.batches.get()) is not None:
            proba = self.model.predict_proba(np.asarray([row for row, _ in batch]))
            labels = self.model.classes_.take(np.argmax(proba, axis=1)).tolist()
            for (row, got), label, ps in zip(batch, labels, proba.tolist(), strict=True):
                want = {"prediction": label, "probabilities": dict(zip(self.classes, ps, strict=True))}
                if got != want:
                    self.wrong += 1
                    if len(self.examples) < 5:
                        self.examples.append({"row": row, "got": got, "want": want})
            self.checked += len(batch)

    def finish(self) -> None:
        self.batches.put(self.pending)
        self.batches.put(None)
        self.thread.join()


class Load:
    """Closed-loop single-row clients (asyncio): each submits a row, long-polls its job until
    done, hands the output to the checker, and submits again. Keeps every accepted job's id
    (16 bytes each) for the loss check and counts every answer that is not 200/202."""

    JOB_DEADLINE = 120.0

    def __init__(self, base: str, token: str, n_features: int, repeat_share: float, checker: Checker) -> None:
        self.base, self.auth = base, {"Authorization": f"Bearer {token}"}
        self.n_features, self.repeat_share, self.checker = n_features, repeat_share, checker
        self.pool = np.random.default_rng(1).normal(0, 1.5, size=(500, n_features)).round(6).tolist()
        self.accepted = bytearray()
        self.unfinished: list[str] = []
        self.submits: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.succeeded = 0
        self.latencies = array("d")

    async def run(self, clients: int, seconds: float, seed: int = 0) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(
            self.base, connector=connector, timeout=timeout, headers=self.auth
        ) as s:
            await asyncio.gather(*(self.client(s, seed, i, started + seconds) for i in range(clients)))
        return loop.time() - started

    async def client(self, session: aiohttp.ClientSession, seed: int, index: int, stop: float) -> None:
        loop = asyncio.get_running_loop()
        rng = np.random.default_rng([seed, index])
        while loop.time() < stop:
            row = (self.pool[rng.integers(len(self.pool))] if rng.random() < self.repeat_share
                   else rng.normal(0, 1.5, self.n_features).round(6).tolist())  # fmt: skip
            tick = time.perf_counter()
            try:
                async with session.post(f"/v1/models/{MODEL}/predictions?wait=10", data=orjson.dumps(
                        {"inputs": [row]}), headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                    status, body = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors[f"submit: {type(exc).__name__}"] += 1
                continue
            self.submits[status] += 1
            if status not in (200, 202):
                self.errors[f"submit: {status} {body[:80].decode(errors='replace')}"] += 1
                await asyncio.sleep(0.1)
                continue
            job = orjson.loads(body)
            self.accepted += uuid.UUID(job["id"]).bytes
            done = await self.until_done(session, job, loop.time() + self.JOB_DEADLINE)
            if done is None:
                self.unfinished.append(job["id"])
            elif done["status"] != "succeeded":
                self.failed[str((done.get("error") or {}).get("code"))] += 1
            else:
                self.succeeded += 1
                self.latencies.append(time.perf_counter() - tick)
                self.checker.add(row, done["outputs"][0])

    async def until_done(self, session: aiohttp.ClientSession, job: Any, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        while not job.get("done", job["status"] in ("succeeded", "failed")):
            if loop.time() > deadline:
                return None
            try:
                async with session.get(f"/v1/predictions/{job['id']}?wait=10") as response:
                    status, body = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors[f"poll: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            if status != 200:
                self.errors[f"poll: {status} {body[:80].decode(errors='replace')}"] += 1
                await asyncio.sleep(0.5)
                continue
            job = orjson.loads(body)
        return job

    def accepted_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(bytes=bytes(self.accepted[i : i + 16])) for i in range(0, len(self.accepted), 16)]


def rss_by_process(redis_ports: dict[int, str], database: str) -> dict[str, float]:
    """RSS in MiB of every process of the soak, named by what it is and its pid: the load
    generator (this process), each process it started and their children (the API's and the
    worker's pool), both Redis servers, and PostgreSQL's backends serving the bench's database."""

    def kind(proc: psutil.Process) -> str:
        line = " ".join(proc.cmdline())
        port = next(
            (role for port, role in redis_ports.items() if f":{port}" in line or f" {port} " in line), None
        )
        if "redis-server" in line:
            return f"redis {port or '?'}"
        return next((name for marker, name in (("app.serve", "api"), (" beat", "beat"), (" worker", "worker"))
                     if marker in line), proc.name())  # fmt: skip

    me = psutil.Process()
    found = {f"loadgen {me.pid}": me.memory_info().rss / MIB}
    for top in me.children():
        try:
            label = kind(top)
            found[f"{label} {top.pid}"] = top.memory_info().rss / MIB
            for child in top.children(recursive=True):
                found[f"{label} child {child.pid}"] = child.memory_info().rss / MIB
        except psutil.Error:
            continue
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if line.startswith("postgres:") and f" {database} " in f"{line} ":
            try:
                found[f"postgresql backend {proc.pid}"] = proc.memory_info().rss / MIB
            except psutil.Error:
                continue
    return {name: round(rss, 1) for name, rss in found.items()}


class Sampler(threading.Thread):
    """Every ``every`` s: both Redis servers' ``used_memory`` and evictions, the predictions so
    far and the load average; the processes' RSS at the start, the middle and the end."""

    def __init__(
        self, redis: dict[str, Redis], load: Load, seconds: float, rss: Any, every: float = 2.0
    ) -> None:
        super().__init__(daemon=True)
        self.redis, self.load, self.seconds, self.rss, self.every = redis, load, seconds, rss, every
        self.samples: list[dict[str, Any]] = []
        self.rss_at: dict[str, dict[str, float]] = {}
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        self.rss_at["start"] = self.rss()
        while not self.stop.wait(self.every):
            elapsed = time.monotonic() - self.started
            sample: dict[str, Any] = {"t": round(elapsed, 1), "predictions": self.load.succeeded,
                                      "load1": os.getloadavg()[0]}  # fmt: skip
            for role, client in self.redis.items():
                try:
                    info = client.info()
                except Exception as exc:  # counted as a gap, never a crash of the soak
                    sample[f"{role}_error"] = str(exc)[:80]
                    continue
                sample[f"{role}_used"] = info["used_memory"]
                sample[f"{role}_evicted"] = info["evicted_keys"]
            self.samples.append(sample)
            if "middle" not in self.rss_at and elapsed >= self.seconds / 2:
                self.rss_at["middle"] = self.rss()

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.rss_at["end"] = self.rss()


def metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    found = 0.0
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        found += sum(s.value for s in family.samples if s.name == name)
    return found


def soak(args: argparse.Namespace, stage: Any, work: Path) -> dict[str, Any]:
    queue_cap, cache_cap = args.queue_cap_mb * MIB, args.cache_cap_mb * MIB
    servers = {
        "queue": start_redis(work / "queue-redis", "--maxmemory", f"{args.queue_cap_mb}mb",
                             "--maxmemory-policy", "noeviction"),
        "cache": start_redis(work / "cache-redis", "--maxmemory", f"{args.cache_cap_mb}mb",
                             "--maxmemory-policy", "allkeys-lru"),
    }  # fmt: skip
    redis = {role: Redis.from_url(url) for role, (_, url) in servers.items()}
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]): role for role, (_, url) in servers.items()}
    database = stage.env["DATABASE_URL"].rsplit("/", 1)[-1].split("?")[0]
    worker_metrics = f"127.0.0.1:{free_port()}"
    env = stage.env | {"REDIS_URL": servers["queue"][1], "CACHE_REDIS_URL": servers["cache"][1],
                       "WORKER_METRICS_BIND": worker_metrics}  # fmt: skip
    env.pop("BROKER_URL", None)  # Celery's messages in the queue's Redis, as in production
    base = f"http://127.0.0.1:{PORT}"
    # The production commands (app/processes.py), quieter: no log line per task for 30 minutes.
    commands = {"api": granian("app.wsgi:app"),
                "worker": [str(BIN / "celery"), *PROCESSES["worker"][1:], "-c", "2", "--loglevel=WARNING"],
                "beat": [str(BIN / "celery"), *PROCESSES["beat"][1:]]}  # fmt: skip
    checker = Checker(stage.model)
    try:
        with running(commands, env, f"{base}/readyz", work):
            load = Load(base, stage.token, stage.model.n_features_in_, args.repeat_share, checker)
            sampler = Sampler(redis, load, args.minutes * 60, lambda: rss_by_process(ports, database))
            load_before = os.getloadavg()
            sampler.start()
            elapsed = run_loop(load.run(args.clients, args.minutes * 60))
            sampler.finish()
            load_after = os.getloadavg()
            late = [job_id for job_id in load.unfinished if not answered(base, stage.token, job_id)]
            ids = load.accepted_ids()
            lost = lost_jobs(stage.engine, ids)
            hits = metric(f"{base}/metrics", "predq_cache_hits_total")
            misses = metric(f"{base}/metrics", "predq_cache_misses_total")
            write_errors = metric(f"http://{worker_metrics}/metrics", "predq_cache_write_errors_total")
            write_errors += metric(f"{base}/metrics", "predq_cache_write_errors_total")
            info = {role: client.info() for role, client in redis.items()}
            keys = {role: client.dbsize() for role, client in redis.items()}
            warnings = [line.strip() for log in work.glob("*.log") for line in log.read_text().splitlines()
                        if "redis_memory" in line or "maxmemory" in line]  # fmt: skip
    finally:
        checker.finish()
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    caps = {"queue": queue_cap, "cache": cache_cap}
    redis_report = {
        role: {
            "cap_bytes": caps[role], "policy": info[role]["maxmemory_policy"],
            "sampled_max_used_bytes": max(s.get(f"{role}_used", 0) for s in sampler.samples),
            "used_memory_peak": info[role]["used_memory_peak"], "used_memory_at_end": info[role]["used_memory"],
            # Redis evicts before each command, so a write may pass the cap by its own size.
            "over_cap_bytes": max(0, info[role]["used_memory_peak"] - caps[role]),
            "evicted_keys": info[role]["evicted_keys"], "expired_keys": info[role]["expired_keys"],
            "keys_at_end": keys[role],
        }
        for role in redis
    }  # fmt: skip
    errors = sum(load.errors.values())
    predictions = load.succeeded
    return {
        "seconds": round(elapsed, 1), "clients": args.clients, "repeat_share": args.repeat_share,
        "predictions": predictions, "predictions_per_s": round(predictions / elapsed, 1),
        "p50_ms": round(statistics.median(load.latencies) * 1000, 1) if load.latencies else None,
        "p99_ms": round(float(np.percentile(load.latencies, 99)) * 1000, 1) if load.latencies else None,
        "accepted": len(ids), "accepted_twice": len(ids) - len(set(ids)), "submit_statuses": dict(load.submits),
        "errors": errors, "error_kinds": dict(load.errors), "failed": dict(load.failed),
        "unfinished_after_120_s": len(load.unfinished), "unfinished_at_the_end": len(late), "lost": lost,
        "outputs_checked": checker.checked, "wrong_outputs": checker.wrong, "wrong_examples": checker.examples,
        "cache_hits": hits, "cache_misses": misses, "cache_hit_rate": round(hits / max(hits + misses, 1), 3),
        "cache_write_errors": write_errors, "redis": redis_report, "start_up_warnings": warnings,
        "load_average": {"before": load_before, "after": load_after,
                         "median_1min": statistics.median(s["load1"] for s in sampler.samples)},
        "rss_mib": sampler.rss_at, "samples": sampler.samples,
    }  # fmt: skip


def answered(base: str, token: str, job_id: str, grace: float = 120.0) -> bool:
    """Poll a job a client gave up on until it is done or ``grace`` s pass."""
    deadline = time.monotonic() + grace
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"/v1/predictions/{job_id}?wait=10").json().get("done"):
                    return True
            except (httpx.HTTPError, ValueError):
                time.sleep(1)
    return False


def lost_jobs(engine: Any, accepted: list[uuid.UUID], grace: float = 60.0) -> int:
    """Accepted jobs not succeeded in the database once the queue has had ``grace`` s to drain."""
    wanted = sorted(set(accepted))
    deadline = time.monotonic() + grace
    while True:
        done = 0
        with engine.connect() as conn:
            for start in range(0, len(wanted), 20_000):
                done += conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status = 'succeeded' AND id = ANY(:ids)"),
                    {"ids": wanted[start : start + 20_000]},
                ).scalar_one()
        if done == len(wanted) or time.monotonic() > deadline:
            return len(wanted) - done
        time.sleep(1)


def markdown(report: dict[str, Any]) -> str:
    soak = report["soak"]
    lines = [f"Redis soak, {report['when']} ({os.cpu_count()} CPUs shared with other sessions; "
             f"`python -m bench.capacity_redis {report['argv']}`)", "",
             f"{soak['seconds']:.0f} s, {soak['clients']} single-row clients ({soak['repeat_share']:.0%} of rows "
             f"repeated): {soak['predictions']:,} predictions ({soak['predictions_per_s']:.0f}/s, p50 "
             f"{soak['p50_ms']} ms, p99 {soak['p99_ms']} ms), {soak['errors']} errors, {soak['lost']} lost, "
             f"{sum(soak['failed'].values())} failed, {soak['wrong_outputs']} wrong outputs of "
             f"{soak['outputs_checked']:,} checked; cache hit rate {soak['cache_hit_rate']:.1%}, "
             f"{soak['cache_write_errors']:.0f} cache writes refused; load average (1 min) median "
             f"{soak['load_average']['median_1min']:.1f}.", "",
             "| Redis | policy | cap | largest used_memory sampled | used_memory_peak | over the cap | evicted keys | keys at end |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for role, r in soak["redis"].items():
        lines.append(f"| {role} | {r['policy']} | {r['cap_bytes']:,} | {r['sampled_max_used_bytes']:,} | "
                     f"{r['used_memory_peak']:,} | {r['over_cap_bytes']:,} | {r['evicted_keys']:,} | "
                     f"{r['keys_at_end']:,} |")  # fmt: skip
    lines += ["", "| process | RSS MiB at start | middle | end |", "| --- | ---: | ---: | ---: |"]
    rss = {at: grouped_rss(found) for at, found in soak["rss_mib"].items()}
    for name in rss.get("start", {}) | rss.get("end", {}):
        lines.append(f"| {name} | " + " | ".join(str(rss.get(at, {}).get(name, "–")) for at in
                                                  ("start", "middle", "end")) + " |")  # fmt: skip
    samples, window = soak["samples"], 300.0
    rates = []
    for start in np.arange(0.0, soak["seconds"] - window / 2, window):
        inside = [s for s in samples if start <= s["t"] <= start + window]
        if len(inside) > 1:
            rates.append(
                f"{(inside[-1]['predictions'] - inside[0]['predictions']) / (inside[-1]['t'] - inside[0]['t']):.0f}"
            )
    lines += ["", f"Predictions/s in each {window / 60:.0f} minutes: {', '.join(rates)}."]
    return "\n".join(lines) + "\n"


def grouped_rss(found: dict[str, float]) -> dict[str, Any]:
    """RSS by process, PostgreSQL's backends (many, short-lived) as one line: how many, largest, sum."""
    backends = [rss for name, rss in found.items() if name.startswith("postgresql backend")]
    grouped: dict[str, Any] = {name: rss for name, rss in found.items() if not name.startswith("postgresql")}
    if backends:
        grouped["postgresql backends: count, largest, sum"] = (
            f"{len(backends)}, {max(backends):.1f}, {sum(backends):.0f}"
        )
    return grouped


def main() -> int:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--no-bytes", action="store_true", help="leave out the bytes per entry")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--queue-cap-mb", type=int, default=128)
    parser.add_argument("--cache-cap-mb", type=int, default=128)
    parser.add_argument("--repeat-share", type=float, default=0.2)
    parser.add_argument("--name", default="capacity_redis", help="bench/results/NAME.{json,md}")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predq-capacity-"))
    for name in ("queue-redis", "cache-redis", "bytes-redis"):
        (work / name).mkdir()
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "argv": " ".join(sys.argv[1:]), "args": vars(args)}  # fmt: skip
    with scratch_database(ADMIN_URL, "predq_capacity") as database_url:
        stage = prepare(database_url, work)
        if not args.no_bytes:
            proc, url = start_redis(work / "bytes-redis")
            try:
                report["bytes"] = measure_bytes(Redis.from_url(url), stage.model, args.entries)
            finally:
                proc.terminate()
                proc.wait()
            print(orjson.dumps(report["bytes"], option=orjson.OPT_INDENT_2).decode(), flush=True)
        report["soak"] = soak(args, stage, work)
        stage.engine.dispose()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(json.dumps({k: v for k, v in report["soak"].items() if k != "samples"}, indent=1))
    print(markdown(report))
    result = report["soak"]
    over = any(r["over_cap_bytes"] > r["cap_bytes"] // 100 for r in result["redis"].values())
    clean = result["lost"] == result["errors"] == result["wrong_outputs"] == 0 and not result["failed"]
    return 0 if clean and not over else 1


if __name__ == "__main__":
    raise SystemExit(main())
