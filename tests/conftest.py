"""Fixtures: a fresh PostgreSQL database and Redis DB per run, real workers, real models.

The plain helpers tests share (clients, rows, counts) are in tests/helpers.py.
Nothing here depends on state left on the services: the database is created (and
dropped) by this run, and the Redis DB number is flushed at the start.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from redis import Redis

from app import create_app
from app.config import Settings
from app.migrate import upgrade
from app.processes import PROCESSES
from scripts.local import ROOT, free_port, process_group, scratch_database, wait_for_http
from tests.helpers import (
    ADMIN_URL,
    API_SERVER_AUTH_CACHE_SECONDS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FUZZ_CASES,
    FUZZ_STATUSES,
    REDIS_URL,
    S3_CREDENTIALS,
    S3_ENDPOINT,
    S3_REDIS_URL,
    api_log_path,
    bin_path,
    celery_worker,
    client_for,
    s3_answers,
    s3_client,
    settings_env,
    subprocess_environ,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with scratch_database(ADMIN_URL, "predq_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    Redis.from_url(REDIS_URL).flushdb()
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        artifact_root=str(tmp_path_factory.mktemp("artifacts")),
        batch_root=str(tmp_path_factory.mktemp("batches")),
        # Small chunks, so a test file of a few thousand rows makes several.
        batch_chunk_rows=1000,
        max_batch_rows=256,
        # A window wide enough that the 1,000-request test's batches do not hang on how
        # fast this machine's API is running (a worker answers a small batch in ~2 ms).
        max_batch_delay=0.02,
        max_rows_per_request=500,
        # Auth stays on, as in production; limits high enough for the load tests (the
        # rate-limit tests use keys with limits of their own).
        rate_limit="100000/second",
        # Every API process of the api_server fixture signs console cookies with it.
        secret_key="test-console-secret",
        extra={"TESTING": True},
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture(scope="session")
def tokens(app: Any) -> dict[str, str]:
    """Bearer tokens: ``predict`` (submit and poll) and ``admin`` (everything)."""
    keys = app.extensions["predq"].keys
    return {scope: keys.create(f"test-{scope}", [scope])[1] for scope in ("predict", "admin")}


@pytest.fixture(scope="session")
def predict_key_id(app: Any, tokens: dict[str, str]) -> int:
    """The id of the predict key: the owner of the jobs ``client`` submits."""
    return app.extensions["predq"].keys.authenticate(tokens["predict"]).key_id


@pytest.fixture
def client(app: Any, tokens: dict[str, str]) -> Any:
    """A test client that sends the predict key on every request."""
    return client_for(app, tokens["predict"])


@pytest.fixture
def anonymous(app: Any) -> Any:
    """A test client that sends no API key."""
    return app.test_client()


@pytest.fixture(scope="session")
def svc(app: Any) -> Any:
    return app.extensions["predq"]


@pytest.fixture(scope="session")
def worker_metrics_url() -> str:
    """Where the test worker serves its Prometheus metrics."""
    return f"http://127.0.0.1:{free_port()}/metrics"


@pytest.fixture(scope="session")
def worker_name() -> str:
    """The test worker's node name, as `celery inspect` addresses it."""
    return f"test-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"


@pytest.fixture(scope="session")
def worker(
    settings: Settings,
    app: Any,
    worker_name: str,
    worker_metrics_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """A real Celery worker (prefork, 2 processes) in a subprocess; yields its log path."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    # The production command (app/processes.py), with 2 processes and a name of its own.
    argv = [
        bin_path(PROCESSES["worker"][0]),
        *PROCESSES["worker"][1:],
        "-c",
        "2",
        "-n",
        worker_name,
    ]
    env = settings_env(settings) | {"WORKER_METRICS_BIND": worker_metrics_url.split("/")[2]}
    with celery_worker(app, argv, env, worker_name, log_path):
        yield log_path


@pytest.fixture(scope="session")
def bulk_worker(settings: Settings, app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real bulk worker (the production command, 2 processes) for batch jobs; yields its log path."""
    log_path = tmp_path_factory.mktemp("bulk-worker") / "bulk-worker.log"
    name = f"bulk-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [bin_path(PROCESSES["bulk-worker"][0]), *PROCESSES["bulk-worker"][1:], "-c", "2", "-n", name]
    env = settings_env(settings) | {"WORKER_METRICS_BIND": f"127.0.0.1:{free_port()}"}
    with celery_worker(app, argv, env, name, log_path):
        yield log_path


@pytest.fixture(scope="session")
def api_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API under granian (app/serve.py), as in production; yields its base URL."""
    port = free_port()
    log_path = api_log_path(tmp_path_factory)
    env = settings_env(settings) | {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "API_THREADS": "64",
                                    "AUTH_CACHE_SECONDS": str(API_SERVER_AUTH_CACHE_SECONDS)}  # fmt: skip
    with process_group([bin_path("python"), "-m", "app.serve"], env, log_path) as proc:
        # Importing the app (scikit-learn, pyarrow, shap) takes 20-30 s on a busy 2-core machine.
        wait_for_http(f"http://127.0.0.1:{port}/healthz", [proc], timeout=90)
        yield f"http://127.0.0.1:{port}"


# -- an S3 server, and an app whose ARTIFACT_ROOT and BATCH_ROOT are on it -----------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server: the one `make test` started (TEST_S3_ENDPOINT), else one of our own."""
    os.environ.update(S3_CREDENTIALS)  # the AWS chain of this process and of its subprocesses
    if s3_answers(S3_ENDPOINT):
        yield S3_ENDPOINT
        return
    port = free_port()
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    argv = [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with process_group(argv, subprocess_environ(), log_path) as proc:
        wait_for_http(f"http://127.0.0.1:{port}/", [proc], timeout=60)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> str:
    """A bucket of this run's own."""
    name = f"predq-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def s3_settings(
    s3_endpoint: str, s3_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of an app on the S3 server, with a database and a Redis DB of its own (so the
    local app's bulk workers never take its chunks)."""
    Redis.from_url(S3_REDIS_URL).flushdb()
    with scratch_database(ADMIN_URL, "predq_s3") as url:
        upgrade(url)
        yield Settings(
            var_dir=str(tmp_path_factory.mktemp("s3-var")),
            database_url=url,
            redis_url=S3_REDIS_URL,
            artifact_root=f"s3://{s3_bucket}/artifacts",
            batch_root=f"s3://{s3_bucket}/batches",
            s3_endpoint_url=s3_endpoint,
            store_retry_seconds=3.0,
            batch_chunk_rows=1000,
            rate_limit="100000/second",
            extra={"TESTING": True},
        )


@pytest.fixture(scope="session")
def s3_app(s3_settings: Settings) -> Any:
    return create_app(s3_settings)


@pytest.fixture(scope="session")
def s3_tokens(s3_app: Any) -> dict[str, str]:
    keys = s3_app.extensions["predq"].keys
    return {scope: keys.create(f"s3-{scope}", [scope])[1] for scope in ("predict", "admin")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A real headless Chromium, driven by Playwright: pages as a person's browser renders them.

    Give each test a context of its own (``browser.new_context()``); ``offline_page`` is one
    that refuses every request not to this machine. One per test module: while Playwright's
    sync API runs, this thread has a running event loop, and tests run later in the session
    that call ``asyncio.run`` (the async client's) would fail.
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's (scripts/ensure-services.sh)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def offline_page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page that can reach only 127.0.0.1, as on a network with no route to the internet, and
    the problems it met: failed requests, answers >= 400, console errors, uncaught exceptions."""
    context = browser.new_context()
    problems: list[str] = []

    def only_local(route: Any) -> None:
        host = route.request.url.split("/")[2].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    context.route("**/*", only_local)
    page = context.new_page()
    page.on(
        "requestfailed",
        lambda r: None if _aborted_by_the_page(r) else problems.append(f"failed: {r.url} {r.failure}"),
    )
    page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield page, problems
    context.close()


def _aborted_by_the_page(request: Any) -> bool:
    """An htmx request still in flight when the page navigated away (a click on a link while a
    progress bar polls): the browser cancels it, which is no fault of the server's."""
    return request.resource_type in ("xhr", "fetch") and request.failure == "net::ERR_ABORTED"


# -- models -----------------------------------------------------------------------------


def _train_models(directory: Path) -> dict[str, Path]:
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    iris = load_iris(as_frame=True)
    diabetes = load_diabetes(as_frame=True)
    models = {
        # Fitted on DataFrames, so they carry feature names: rows may be lists or objects.
        "iris": RandomForestClassifier(n_estimators=25, random_state=0).fit(iris.data, iris.target),
        "diabetes": Ridge(alpha=0.5).fit(diabetes.data, diabetes.target),
        # Fitted on a bare array: no feature names, rows must be lists.
        "plain": Ridge().fit(diabetes.data.to_numpy()[:, :3], diabetes.target),
    }
    paths = {}
    for name, estimator in models.items():
        paths[name] = directory / f"{name}.joblib"
        joblib.dump(estimator, paths[name])
    return paths


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _train_models(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def registered(svc: Any, artifacts: dict[str, Path]) -> dict[str, Any]:
    """iris (classifier), diabetes (regressor) and plain (no feature names), version 1 each."""
    return {name: svc.registry.register(name, path) for name, path in artifacts.items()}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    _fuzz_summary(terminalreporter)
    _fault_summary(terminalreporter)


def _fuzz_summary(terminalreporter: Any) -> None:
    """How many schemathesis cases ran per operation, and the statuses they got."""
    if not FUZZ_CASES:
        return
    terminalreporter.section("schemathesis")
    for operation, count in sorted(FUZZ_CASES.items()):
        terminalreporter.write_line(f"{count:>6}  {operation}")
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(FUZZ_STATUSES.items()))
    terminalreporter.write_line(f"{sum(FUZZ_CASES.values()):>6}  cases in all; statuses {statuses}")


def _fault_summary(terminalreporter: Any) -> None:
    """The fault report: a row per fault, printed and written to var/fault-report.json."""
    from tests.fault_stack import REPORT, redis_setup

    if not REPORT:
        return
    columns = ["submitted", "accepted", "succeeded", "lost", "answered_twice_differently", "wrong_output",
               "refused_503"]  # fmt: skip
    terminalreporter.section(f"fault report ({redis_setup()})")
    terminalreporter.write_line(
        f"{'fault':<48} " + " ".join(f"{c:>10.10}" for c in columns) + "  other answers"
    )
    for row in REPORT:
        cells = " ".join(f"{getattr(row, c):>10}" for c in columns)
        terminalreporter.write_line(f"{row.fault:<48} {cells}  {row.other_answers or '-'}")
    out = ROOT / "var" / "fault-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([row.as_dict() for row in REPORT], indent=2))
    terminalreporter.write_line(f"written to {out.relative_to(ROOT)}")
