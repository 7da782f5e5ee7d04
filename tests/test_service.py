"""Health, readiness, OpenAPI and migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from app import create_app
from app.migrate import alembic_config, upgrade
from scripts.local import free_port
from tests.helpers import client_for, settings_env


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_with_everything_up(client, worker):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok", "worker": "ok"}


def test_readyz_names_what_is_down(settings):
    broken = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))

    response = broken.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json["checks"]["database"] == "ok"
    assert response.json["down"] == ["redis", "worker"]


def test_openapi_document_comes_from_the_schemas(client):
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    post = spec["paths"]["/v1/models/{name}/predictions"]["post"]
    request_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["$ref"].endswith("/PredictionRequest")
    assert spec["components"]["schemas"]["PredictionRequest"]["required"] == ["inputs"]
    assert {"200", "202", "404", "409", "413", "415", "422"} <= set(post["responses"])
    assert "/v1/predictions/{job_id}" in spec["paths"]
    assert "/readyz" in spec["paths"]


def test_docs_page(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.get_data(as_text=True).lower()


def test_timestamps_carry_their_utc_offset_on_sqlite_too(settings, artifacts, tmp_path):
    """SQLite stores no offset; without it the API would show local times, not RFC 3339."""
    url = f"sqlite:///{tmp_path / 'offsets.sqlite3'}"
    upgrade(url)
    embedded = create_app(settings.replace(database_url=url, auth_enabled=False))
    embedded.extensions["predq"].registry.register("iris", artifacts["iris"])

    described = embedded.test_client().get("/v1/models/iris").json

    for stamp in (described["created_at"], described["versions"][0]["created_at"]):
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp


def test_migrations_build_the_schema_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"models", "model_versions", "model_aliases", "jobs", "batches", "alembic_version"} <= tables


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_the_migrations_build_exactly_the_schema_app_db_describes(where, database_url, tmp_path):
    """`alembic check`: autogenerate finds nothing between the migrated database and the models in app/db/."""
    url = f"sqlite:///{tmp_path / 'check.sqlite3'}" if where == "sqlite" else database_url
    if where == "sqlite":
        upgrade(url)
    command.check(alembic_config(url))  # raises when a model and the migrations disagree
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"jobs", "batches", "api_keys", "training_runs", "feedback", "shadow_outputs"} <= tables


def test_job_inputs_and_outputs_are_compressed_with_lz4_on_postgresql(database_url):
    """pglz costs ~3x more server CPU per 100-row job (migration 0008)."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        methods = dict(
            conn.execute(
                text(
                    "SELECT attname, attcompression FROM pg_attribute "
                    "WHERE attrelid = 'jobs'::regclass AND attname IN ('inputs', 'outputs')"
                )
            ).all()
        )
    engine.dispose()
    assert methods == {"inputs": "l", "outputs": "l"}


def test_database_down_gives_503_with_retry_after_and_queues_nothing(settings, svc, tokens):
    down = create_app(
        settings.replace(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    )
    keys_before = set(svc.redis.scan_iter(match="predq:*"))

    http = client_for(down, tokens["predict"])
    submit = http.post("/v1/models/iris/predictions", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    poll = http.get("/v1/predictions/00000000-0000-0000-0000-000000000000")

    for response in (submit, poll):
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json["error"]["code"] == "service_unavailable"
    # Nothing was added (keys earlier tests left may expire meanwhile: a long-poll's lasts 60 s).
    added = set(svc.redis.scan_iter(match="predq:*")) - keys_before
    assert added == set(), "a refused submit queues nothing and caches nothing"


def test_alembic_upgrade_head_builds_the_schema(tmp_path):
    """README: `alembic upgrade head` is the other way to create the schema."""
    url = f"sqlite:///{tmp_path / 'alembic.sqlite3'}"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert "jobs" in inspect(create_engine(url)).get_table_names()


def test_the_worker_liveness_command_answers_for_a_live_worker_only(settings, worker, worker_name):
    """The liveness check compose runs in each worker container (docker-compose.yml)."""
    ping = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "workers.main",
        "inspect",
        "ping",
        "--timeout",
        "5",
    ]

    alive = subprocess.run([*ping, "--destination", worker_name], env=settings_env(settings),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    absent = subprocess.run([*ping, "--destination", "nobody@nowhere"], env=settings_env(settings),
                            capture_output=True, text=True, timeout=60)  # fmt: skip

    assert alive.returncode == 0 and "pong" in alive.stdout, alive.stdout + alive.stderr
    assert absent.returncode != 0
