"""Redis under a memory budget: the output cache and result views in a Redis of their own
(CACHE_REDIS_URL), capped, while the queue's Redis never evicts; the start-up warnings.

The capped stack is this module's own: a queue Redis and a cache Redis on free ports, an
app built on them and a real worker (the production command) reading the same settings.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from app import create_app
from app.predictions.items import decode_outputs, decode_view, encode_output, encode_view
from app.processes import PROCESSES
from app.redis_memory import budget_warnings, check_at_start
from scripts.local import ROOT, free_port, process_group, wait_for_http
from tests.fault_stack import LocalRedis
from tests.helpers import (
    bin_path,
    celery_worker,
    client_for,
    expected_outputs,
    iris_rows,
    metric_samples,
    settings_env,
    stored_estimator,
)

# Room above an empty Redis's own memory for the cache: a few hundred outputs and views.
HEADROOM_BYTES = 150_000


class CappedStack:
    """A queue Redis (noeviction, no cap), a cache Redis capped just above its empty size,
    an app on both and a worker; ``client`` submits with the predict key."""

    def __init__(self, queue: LocalRedis, cache: LocalRedis, app: Any, client: Any, metrics_url: str) -> None:
        self.queue, self.cache, self.app, self.client, self.metrics_url = (
            queue,
            cache,
            app,
            client,
            metrics_url,
        )
        self.cache_redis = Redis.from_url(cache.url)

    def cap(self, policy: str) -> int:
        """Cap the cache Redis HEADROOM_BYTES above what it uses now, under ``policy``; returns the cap.

        Its clients' buffers count in its memory: concurrent submits first open them.
        """
        self.cache_redis.config_set("maxmemory", 0)
        submit_all(self.client, iris_rows(64).tolist())
        self.cache_redis.flushall()
        cap = int(self.cache_redis.info("memory")["used_memory"]) + HEADROOM_BYTES
        self.cache_redis.config_set("maxmemory", cap)
        self.cache_redis.config_set("maxmemory-policy", policy)
        return cap

    def worker_metric(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            samples = metric_samples(response.read().decode())
        return sum(value for (sample, _), value in samples.items() if sample == name)


@pytest.fixture(scope="module")
def capped(settings, registered, tokens, tmp_path_factory) -> Iterator[CappedStack]:
    directory = tmp_path_factory.mktemp("capped")
    queue = LocalRedis(directory / "queue")
    cache = LocalRedis(directory / "cache")
    for redis in (queue, cache):
        redis.directory.mkdir()
        redis.start()
    mine = settings.replace(redis_url=queue.url, cache_redis_url=cache.url)
    app = create_app(mine)
    name = f"capped-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    bind = f"127.0.0.1:{free_port()}"
    argv = [bin_path(PROCESSES["worker"][0]), *PROCESSES["worker"][1:], "-c", "2", "-n", name]
    env = settings_env(mine) | {"CACHE_REDIS_URL": cache.url, "WORKER_METRICS_BIND": bind}
    try:
        with celery_worker(app, argv, env, name, directory / "worker.log"):
            client = client_for(app, tokens["predict"])
            yield CappedStack(queue, cache, app, client, f"http://{bind}/metrics")
    finally:
        queue.kill()
        cache.kill()


def submit_all(client: Any, rows: list[list[float]]) -> list[dict[str, Any]]:
    """Each row as a job of its own, half of them waiting (the deferred road), half not
    (stored); returns each job as finally polled."""

    def one(i: int) -> dict[str, Any]:
        wait = "?wait=10" if i % 2 else ""
        submitted = client.post(f"/v1/models/iris/predictions{wait}", json={"inputs": [rows[i]]})
        assert submitted.status_code in (200, 202), submitted.json
        job = submitted.json
        deadline = time.monotonic() + 60
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            job = client.get(f"/v1/predictions/{job['id']}?wait=10").json
        return job

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(len(rows))))


def assert_every_job_answered(svc: Any, rows: list[list[float]], jobs: list[dict[str, Any]]) -> None:
    expected = expected_outputs(stored_estimator(svc, "iris"), rows)
    assert [job["status"] for job in jobs] == ["succeeded"] * len(rows)
    assert [job["outputs"][0] for job in jobs] == expected


def test_a_full_evicting_cache_never_fails_a_submit(capped, svc):
    cap = capped.cap("allkeys-lru")
    evicted_before = capped.cache_redis.info("stats")["evicted_keys"]
    rows = iris_rows(1500, seed=31).tolist()

    jobs = submit_all(capped.client, rows)

    assert_every_job_answered(svc, rows, jobs)
    memory = capped.cache_redis.info()
    assert memory["evicted_keys"] > evicted_before, "the cap was reached: old outputs and views were evicted"
    assert memory["used_memory"] <= cap * 1.05
    # The queue's Redis evicted nothing and holds no cache or result key.
    queue = Redis.from_url(capped.queue.url)
    assert queue.info("stats")["evicted_keys"] == 0
    assert not list(queue.scan_iter(match="predq:cache:*")) and not list(
        queue.scan_iter(match="predq:result:*")
    )
    # Outputs still cached are answered from the cache Redis at once, the same outputs.
    recent = rows[-20:]
    again = capped.client.post("/v1/models/iris/predictions", json={"inputs": recent})
    assert again.status_code in (200, 202)
    if again.status_code == 202:  # some were evicted: the rest come from a worker
        again = capped.client.get(f"/v1/predictions/{again.json['id']}?wait=20")
    assert again.json["outputs"] == expected_outputs(stored_estimator(svc, "iris"), recent)


def test_a_full_cache_that_refuses_writes_is_skipped_and_counted(capped, svc):
    capped.cap("noeviction")
    errors_before = capped.worker_metric("predq_cache_write_errors_total")
    evicted_before = capped.cache_redis.info("stats")["evicted_keys"]
    rows = iris_rows(1500, seed=32).tolist()

    jobs = submit_all(capped.client, rows)

    assert_every_job_answered(svc, rows, jobs)
    assert capped.cache_redis.info("stats")["evicted_keys"] == evicted_before
    assert capped.worker_metric("predq_cache_write_errors_total") > errors_before


def test_an_unreachable_cache_is_a_miss_and_never_fails_a_submit(capped, svc):
    capped.cap("allkeys-lru")
    rows = iris_rows(40, seed=33).tolist()
    capped.cache.kill()

    jobs = submit_all(capped.client, rows)

    assert_every_job_answered(svc, rows, jobs)


# -- start-up warnings ------------------------------------------------------------------


def test_budget_warnings_name_the_setting():
    fine = {"maxmemory": 0, "maxmemory_policy": "noeviction"}
    assert budget_warnings(fine, None) == []
    assert budget_warnings(fine, {"maxmemory": 64 << 20, "maxmemory_policy": "allkeys-lru"}) == []

    (evicting,) = budget_warnings({"maxmemory": 64 << 20, "maxmemory_policy": "volatile-lru"},
                                  {"maxmemory": 64 << 20, "maxmemory_policy": "allkeys-lru"})  # fmt: skip
    assert "REDIS_URL" in evicting and "volatile-lru" in evicting and "noeviction" in evicting
    (shared,) = budget_warnings({"maxmemory": 64 << 20, "maxmemory_policy": "noeviction"}, None)
    assert "CACHE_REDIS_URL" in shared
    (unbounded,) = budget_warnings(fine, {"maxmemory": 0, "maxmemory_policy": "noeviction"})
    assert "CACHE_REDIS_URL" in unbounded and "maxmemory" in unbounded
    (refusing,) = budget_warnings(fine, {"maxmemory": 1 << 20, "maxmemory_policy": "noeviction"})
    assert "allkeys-lru" in refusing


@pytest.fixture
def evicting_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A Redis that may evict queued rows (capped, allkeys-lru): every check should name it."""
    redis = LocalRedis(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    redis.start()
    yield redis
    redis.kill()


def test_the_check_names_a_queue_redis_that_may_evict(settings, evicting_redis, caplog):
    with caplog.at_level(logging.WARNING, logger="app.redis_memory"):
        returned = check_at_start(settings.replace(redis_url=evicting_redis.url))
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.redis_memory"]
    assert warnings == returned
    assert any("REDIS_URL" in w and "allkeys-lru" in w for w in warnings), warnings
    assert any("CACHE_REDIS_URL" in w for w in warnings), "the cache shares a capped Redis"


def test_the_check_is_quiet_when_the_queue_redis_never_evicts(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="app.redis_memory"):
        assert check_at_start(settings) == []
    assert [r for r in caplog.records if r.name == "app.redis_memory"] == []


def test_building_the_app_does_not_check_redis(settings, evicting_redis, caplog):
    # Every `flask --app app ...` command and every test builds an app: none of them checks.
    with caplog.at_level(logging.INFO, logger="app.redis_memory"):
        create_app(settings.replace(redis_url=evicting_redis.url))
    assert [r.getMessage() for r in caplog.records if r.name == "app.redis_memory"] == []


def test_a_cli_command_does_not_check_redis(settings, evicting_redis):
    env = settings_env(settings) | {"REDIS_URL": evicting_redis.url, "LOG_FORMAT": "text"}
    done = subprocess.run([bin_path("flask"), "--app", "app", "keys", "list"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "maxmemory" not in done.stdout + done.stderr, "a CLI command is no serving process"


def _started_says(argv: list[str], env: dict[str, str], log: Path, words: str) -> str:
    """Start ``argv`` and return its output once ``words`` is in it (up to 120 s), then stop it."""
    with process_group(argv, env, log) as proc:
        deadline = time.monotonic() + 120
        while words not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        return log.read_text()


def test_the_api_server_checks_once_as_it_starts(settings, evicting_redis, tmp_path):
    env = settings_env(settings) | {"REDIS_URL": evicting_redis.url, "BIND": f"127.0.0.1:{free_port()}",
                                    "WEB_CONCURRENCY": "2", "LOG_FORMAT": "text"}  # fmt: skip
    with process_group([bin_path("python"), "-m", "app.serve"], env, tmp_path / "api.log") as proc:
        wait_for_http(f"http://{env['BIND']}/healthz", [proc], timeout=120)
    output = (tmp_path / "api.log").read_text()
    assert output.count("REDIS_URL's Redis runs maxmemory-policy allkeys-lru") == 1, output[-3000:]


def test_a_worker_checks_as_it_starts(settings, evicting_redis, tmp_path):
    env = settings_env(settings) | {"REDIS_URL": evicting_redis.url, "LOG_FORMAT": "text"}
    name = f"checks-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [bin_path(PROCESSES["worker"][0]), *PROCESSES["worker"][1:], "-c", "1", "-n", name]
    output = _started_says(argv, env, tmp_path / "worker.log", "maxmemory-policy allkeys-lru")
    assert "REDIS_URL's Redis runs maxmemory-policy allkeys-lru" in output, output[-3000:]


# -- what a cached output costs ---------------------------------------------------------


def test_cached_outputs_are_compact_and_decode_to_the_same_output():
    classifier = {"prediction": 2, "probabilities": {"0": 0.0, "1": 0.25, "2": 0.75}}
    regressor = {"prediction": 151.25}
    explained = {"prediction": 1, "explanation": {"base_value": 0.5, "contributions": {"a": 0.5}}}
    classes = ["0", "1", "2"]

    encoded = [encode_output(output) for output in (classifier, regressor, explained)]

    assert decode_outputs([*encoded, None], classes) == [classifier, regressor, explained, None]
    assert len(encoded[0]) < len(orjson.dumps(classifier)) / 1.8
    assert b"probabilities" not in encoded[0] and b"prediction" not in encoded[1]
    # Probabilities that do not match the version's classes, or a value that is not ours,
    # are misses: the row goes to a worker.
    assert decode_outputs([encoded[0], orjson.dumps(classifier) + b"x"], ["0", "1"]) == [None, None]


def test_a_finished_view_is_compact_and_decodes_to_the_same_view():
    outputs = [{"prediction": i % 3, "probabilities": {"0": 0.5, "1": 0.25, "2": 0.25}} for i in range(3)]
    view = {"id": str(uuid.uuid4()), "status": "succeeded", "done": True, "model": {"name": "iris", "version": 2},
            "outputs": outputs, "error": None, "priority": "high", "deadline": "2026-12-05T10:00:01.123456+00:00",
            "created_at": "2026-12-05T10:00:00.123456+00:00", "completed_at": "2026-12-05T10:00:00.234567+00:00",
            "webhook": None}  # fmt: skip
    failed = view | {
        "status": "failed",
        "outputs": None,
        "error": {"code": "x", "message": "y", "details": {}},
    }

    encoded = encode_view(7, view)

    assert decode_view(encoded) == (7, view)
    assert decode_view(encode_view(None, failed)) == (None, failed)
    hooked = view | {"webhook": {"url": "https://example.com/h", "state": "pending", "attempts": 0,
                                 "last_status_code": None}}  # fmt: skip
    assert decode_view(encode_view(7, hooked)) == (7, hooked), "a job with a callback_url keeps it"
    assert len(encoded) < len(orjson.dumps(view)) / 2
    assert encoded.count(b"probabilities") == 0 and encoded.count(b"0.25") == 0
    # A view written before this form ("<owner>|<json>") still reads.
    assert decode_view(b"7|" + orjson.dumps(view)) == (7, view)
    assert decode_view(b"|" + orjson.dumps(failed)) == (None, failed)
