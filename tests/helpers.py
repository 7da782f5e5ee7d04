"""Plain helpers the tests share: where the services are, clients, rows, counts, expected answers.

Fixtures and pytest's hooks live in conftest.py, which imports from here like every test
module; no test module imports from another one, or from conftest (tests/test_house.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import func, insert, select

from app.config import Settings
from app.db import Job, utcnow
from app.processes import worker_command
from scripts.local import ROOT, process_group

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
#: The S3 server the object-store tests use (moto's, started by scripts/ensure-services.sh;
#: the s3_endpoint fixture starts one of its own when none answers there).
S3_ENDPOINT = os.environ.get("TEST_S3_ENDPOINT", "http://127.0.0.1:9390")
#: The Redis DB of the object-store tests' own app (its bulk queue is not the local one's).
S3_REDIS_URL = os.environ.get("TEST_S3_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/15")
#: Credentials for the S3 server (moto takes any); the AWS chain reads them from the environment.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "predq-test", "AWS_SECRET_ACCESS_KEY": "predq-test-secret"}

#: Cases run and statuses seen by the fuzzer, per operation; conftest prints them after the run.
FUZZ_CASES: Counter[str] = Counter()
FUZZ_STATUSES: Counter[int] = Counter()

# -- processes ----------------------------------------------------------------------------


def bin_path(name: str) -> str:
    """A command installed in this virtualenv (celery, predq, python)."""
    return str(Path(sys.executable).parent / name)


def subprocess_environ() -> dict[str, str]:
    """This environment, less what importing ``workers`` here set for this process alone.

    Each server picks its own metrics directory; inherited, the API and the worker would
    share this process's and count each other's samples.
    """
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (worker, gunicorn) use ``settings``."""
    env = subprocess_environ()
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=settings.artifact_root,
        BATCH_ROOT=settings.batch_root,
        S3_ENDPOINT_URL=settings.s3_endpoint_url,
        MODEL_CACHE_DIR=settings.model_cache_dir,
        STORE_RETRY_SECONDS=str(settings.store_retry_seconds),
        BATCH_CHUNK_ROWS=str(settings.batch_chunk_rows),
        MAX_BATCH_ROWS=str(settings.max_batch_rows),
        MAX_BATCH_DELAY=str(settings.max_batch_delay),
        MAX_ROWS_PER_REQUEST=str(settings.max_rows_per_request),
        RATE_LIMIT=settings.rate_limit,
        SECRET_KEY=settings.secret_key,
        PYTHONPATH=str(ROOT),
    )
    return env


def s3_client(endpoint: str) -> Any:
    """A botocore S3 client of the test server (to look at the bucket as another tool would)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.Session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
    )  # fmt: skip


def s3_answers(endpoint: str) -> bool:
    try:
        s3_client(endpoint).list_buckets()
    except Exception:
        return False
    return True


def api_log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the api_server fixture's HTTP server writes its output."""
    return tmp_path_factory.getbasetemp() / "api-server.log"


#: How often the api_server fixture's processes re-read the API keys: a key a test creates
#: works there once this has passed.
API_SERVER_AUTH_CACHE_SECONDS = 0.5


# -- talking to the API -------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_for(app: Any, token: str) -> Any:
    """A test client of ``app`` that sends ``token`` on every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def arrow_body(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream, the body of an Arrow request."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus exposition, keyed by name and labels (the text must parse)."""
    # Imported when called: conftest loads this module first, and prometheus_client reads its
    # multiprocess directory when imported (app/multiproc.py), so it is left to what tests import.
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_test_client(client: Any) -> dict[tuple[str, frozenset], float]:
    """Every sample the app's /metrics serves (a test client's)."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return metric_samples(response.get_data(as_text=True))


# -- rows and what the models make of them ------------------------------------------------

IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS_LOW, IRIS_HIGH = [4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]


def iris_rows(n: int, seed: int | None = None, decimals: int = 3) -> np.ndarray:
    """``n`` rows within the iris features' ranges, an (n, 4) array rounded to ``decimals``.

    A seed gives the same rows on every run (and a longer draw starts with a shorter one's
    rows); without one the rows are fresh, so the service has never cached their answers.
    """
    return np.random.default_rng(seed).uniform(IRIS_LOW, IRIS_HIGH, size=(n, 4)).round(decimals)


def arrow_table(rows: np.ndarray) -> pa.Table:
    """Iris rows as an Arrow table, a column per feature."""
    return pa.table(dict(zip(IRIS_FEATURES, rows.T, strict=True)))


def stored_estimator(svc: Any, name: str, version: int = 1) -> Any:
    """The artifact as stored by the registry, loaded in this process for comparison."""
    served = svc.registry.resolve(name, version=version)
    return joblib.load(Path(svc.settings.artifact_root) / served.artifact_path)


def expected_outputs(estimator: Any, rows: list[list[float]]) -> list[dict[str, Any]]:
    """The outputs a job of ``rows`` must hold: ``estimator``'s own, called in this process."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=getattr(estimator, "feature_names_in_", None))
    predictions = estimator.predict(frame).tolist()
    if not hasattr(estimator, "predict_proba"):
        return [{"prediction": p} for p in predictions]
    probabilities = estimator.predict_proba(frame).tolist()
    classes = [str(c) for c in estimator.classes_]
    return [
        {"prediction": p, "probabilities": dict(zip(classes, ps, strict=True))}
        for p, ps in zip(predictions, probabilities, strict=True)
    ]


# -- what the services hold ---------------------------------------------------------------


def insert_queued_job(
    svc: Any, model: str, inputs: list[list[float]], created_at: Any = None, owner: int | None = None
) -> uuid.UUID:
    """A job row as the API would store it, but never pushed to Redis (as if Redis lost it).

    ``owner`` is the submitting key's id; without one only admin keys (or auth off) read it.
    """
    job_id = uuid.uuid4()
    with svc.engine.begin() as conn:
        conn.execute(
            insert(Job),
            {"id": job_id, "model_name": model, "model_version": 1, "status": "queued", "n_rows": len(inputs),
             "inputs": inputs, "cached_rows": 0, "owner_key_id": owner, "created_at": created_at or utcnow()},
        )  # fmt: skip
    return job_id


def count_rows(svc: Any, table: Any) -> int:
    """How many rows ``table`` (a model class: Job, Batch, BulkJob) holds."""
    with svc.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def count_jobs(svc: Any) -> int:
    return count_rows(svc, Job)


def wait_until_no_worker_holds(
    svc: Any, model: str, version: int, timeout: float = 15.0, *, explained: bool = False
) -> None:
    """A worker that emptied a queue lingers on it briefly (QUEUE_LINGER_SECONDS) and would
    take rows a test pushes by hand; tests that mean those rows to sit wait it out.
    ``explained``: the version's explained rows' queue."""
    from app.predictions.queue import active_key

    deadline = time.monotonic() + timeout
    while svc.redis.exists(active_key(model, version, explained)):
        assert time.monotonic() < deadline, f"a worker still holds {model} v{version}'s queue"
        time.sleep(0.01)


def predq_keys(svc: Any) -> set[bytes]:
    """predq's Redis keys, less the marks of a worker holding a queue: those expire on their
    own (ACTIVE_TTL_SECONDS) after an earlier test's batch, whatever a request did; and the
    loaded versions each worker reports on its own (app/registry/held.py)."""
    return {
        key
        for key in svc.redis.scan_iter(match="predq:*", count=1000)
        if not key.startswith((b"predq:active:", b"predq:held"))
    }


def worker_argv(queues: str, name: str, concurrency: int) -> list[str]:
    """The production command of a Celery worker (app/processes.py) on ``queues``, in this
    virtualenv, with ``concurrency`` processes and node name ``name``."""
    command = worker_command(queues, "-c", str(concurrency), "-n", name)
    return [bin_path(command[0]), *command[1:]]


@contextlib.contextmanager
def celery_worker(
    app: Any, argv: list[str], env: dict[str, str], name: str, log_path: Path
) -> Iterator[None]:
    """A Celery worker process, once it answers a ping by its node name; stopped after."""
    with process_group(argv, env, log_path) as proc:
        deadline = time.monotonic() + 60
        while not app.extensions["celery"].control.ping(destination=[name], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log_path.read_text()}")
        yield


#: Debian's Chromium, which scripts/ensure-services.sh installs (Playwright's own download
#: needs a CDN this machine cannot reach).
CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# No sandbox: tests run as root in CI. The rest keeps the browser from calling home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


# -- the console ---------------------------------------------------------------------------


def csrf_of(html: str) -> str:
    """The CSRF token a console page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def console_client(app: Any, token: str) -> Any:
    """A test client signed in to /console with ``token`` (its session cookie set)."""
    client = app.test_client()
    form = client.get("/console/sign-in")
    signed_in = client.post("/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": token})
    assert signed_in.status_code == 303, signed_in.text
    return client


def console_post(client: Any, page: str, data: dict[str, Any]) -> Any:
    """POST ``data`` with the CSRF token of the form on ``page`` (as a browser submits it)."""
    token = csrf_of(client.get(page).text)
    return client.post(page.split("?")[0], data={"csrf_token": token, **data})


# -- a webhook receiver ---------------------------------------------------------------------


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (a thread) that records every request and answers each
    POST with ``answer(seconds since the receiver started, path)``'s status code.

    ``received`` holds ``(path, headers with lower-case names, body)`` in arrival order;
    ``connections`` counts the TCP connections it accepted (a refused webhook makes none).
    """

    def __init__(self, answer: Any = None) -> None:
        import http.server
        import threading

        self.answer = answer or (lambda elapsed, path: 200)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        """The status each request in ``received`` was answered with."""
        self.connections = 0
        self.cut_off = 0
        """Requests whose body ended early (their sender killed mid-send): not in ``received``."""
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with receiver.lock:
                    receiver.connections += 1
                super().setup()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-body: no request, as any HTTP server has it
                    with receiver.lock:
                        receiver.cut_off += 1
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.answer(time.monotonic() - receiver.started, self.path)
                with receiver.lock:
                    receiver.received.append((self.path, headers, body))
                    receiver.statuses.append(status)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookReceiver:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies_to(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(headers, body) for p, headers, body in self.received if p == path]
