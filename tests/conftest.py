"""Fixtures: a fresh PostgreSQL database and Redis DB per run, real workers, real models.

Nothing here depends on state left on the services: the database is created (and
dropped) by this run, and the Redis DB number is flushed at the start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import pytest
from redis import Redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app import create_app
from app.config import Settings
from app.db import Job
from app.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"predq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    Redis.from_url(REDIS_URL).flushdb()
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        artifact_root=str(tmp_path_factory.mktemp("artifacts")),
        max_batch_rows=256,
        max_batch_delay=0.01,
        max_rows_per_request=500,
        extra={"TESTING": True},
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (worker, gunicorn) use ``settings``."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=settings.artifact_root,
        MAX_BATCH_ROWS=str(settings.max_batch_rows),
        MAX_BATCH_DELAY=str(settings.max_batch_delay),
        MAX_ROWS_PER_REQUEST=str(settings.max_rows_per_request),
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture(scope="session")
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="session")
def svc(app: Any) -> Any:
    return app.extensions["predq"]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def subprocess_in_group(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in its own process group, logging to ``log_path``; stop the group after."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def worker(settings: Settings, app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real Celery worker (prefork, 2 processes) in a subprocess; yields its log path."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    argv = [
        _bin("celery"),
        "-A",
        "workers",
        "worker",
        "-c",
        "2",
        "-l",
        "info",
        "-n",
        f"test-{uuid.uuid4().hex[:6]}@%h",
    ]
    with subprocess_in_group(argv, settings_env(settings), log_path) as proc:
        celery = app.extensions["celery"]
        deadline = time.monotonic() + 60
        while not celery.control.ping(timeout=0.5, limit=1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()}")
        yield log_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def api_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API under gunicorn, as in production; yields its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("api") / "gunicorn.log"
    argv = [_bin("gunicorn"), "app:create_app()", "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "64"]
    with subprocess_in_group(argv, settings_env(settings), log_path) as proc:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"


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


def stored_estimator(svc: Any, name: str, version: int = 1) -> Any:
    """The artifact as stored by the registry, loaded in this process for comparison."""
    served = svc.registry.resolve(name, version=version)
    return joblib.load(Path(svc.settings.artifact_root) / served.artifact_path)


def count_jobs(svc: Any) -> int:
    with svc.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Job)).scalar_one()


def predq_keys(svc: Any) -> set[bytes]:
    return set(svc.redis.scan_iter(match="predq:*", count=1000))
