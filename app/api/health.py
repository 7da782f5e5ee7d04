"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text

from app.api.blueprint import Blueprint
from app.api.live_metrics import exposition
from app.api.openapi import RETRY_AFTER
from app.api.schemas import HealthSchema, ReadinessSchema
from app.registry import held, pools
from app.services import Services, current_services

blp = Blueprint("health", __name__, description="Health checks")
log = logging.getLogger(__name__)


@blp.route("/healthz", methods=["GET"])
@blp.alt_response(200, schema=HealthSchema, description="Alive.")
def healthz() -> dict[str, Any]:
    """The API process is alive."""
    return {"status": "ok"}


@blp.route("/metrics", methods=["GET"])
@blp.doc(
    responses={
        "200": {
            "description": "Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
)
def metrics() -> tuple[bytes, int, dict[str, str]]:
    """Prometheus metrics of the API processes, plus queue depth and the oldest queued job."""
    body, headers = exposition(current_services())
    return body, 200, headers


@blp.route("/readyz", methods=["GET"])
@blp.alt_response(200, schema=ReadinessSchema, description="Database, Redis and a worker answered.")
@blp.alt_response(
    503, schema=ReadinessSchema, description="A dependency is down; the body names it.", headers=RETRY_AFTER
)
def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Database, Redis and at least one worker are reachable (and the object store, when one is used)."""
    svc = current_services()
    checks = readiness(svc)
    down = [name for name, state in checks.items() if state != "ok"]
    # A pool with no worker does not make the API unready (other models serve): its jobs wait.
    served = _pools(svc) if checks["redis"] == "ok" and checks["database"] == "ok" else {}
    if down:
        log.warning("not ready: %s", ", ".join(f"{n} {checks[n]}" for n in down))
        return (
            {"status": "unavailable", "checks": checks, "pools": served, "down": down},
            503,
            {"Retry-After": "5"},
        )
    return {"status": "ok", "checks": checks, "pools": served}, 200, {}


def connection_checks(svc: Services) -> dict[str, str]:
    """The database and Redis, each "ok" or why not (/readyz and the console's overview)."""
    checks: dict[str, str] = {}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    return checks


def readiness(svc: Services) -> dict[str, str]:
    """Database, Redis and a worker (and the object store, for s3:// roots), each "ok" or what is
    wrong (/readyz, /v2/health/ready)."""
    checks = connection_checks(svc)
    if checks["redis"] == "ok":
        try:
            # limit=1 returns on the first reply instead of waiting out the timeout.
            replies = svc.celery.control.ping(timeout=1.0, limit=1)
            checks["worker"] = "ok" if replies else "no worker answered"
        except Exception as exc:
            checks["worker"] = f"unreachable: {type(exc).__name__}"
    else:
        checks["worker"] = "unknown: broker unreachable"
    # Named only when ARTIFACT_ROOT or BATCH_ROOT is an object store (a directory has no outage of its own).
    remote = {s.root: s for s in (svc.registry.artifacts.store, svc.batches) if s.remote}
    if remote:
        wrong = [f"{root}: {state}" for root, store in remote.items() if (state := store.check()) != "ok"]
        checks["store"] = "; ".join(wrong) or "ok"
    return checks


def _pools(svc: Services) -> dict[str, str]:
    """Each worker pool (POOLS, and any a model is in): "ok", or "no worker" (its jobs wait)."""
    try:
        names = sorted(set(pools.known(svc.settings.pools)) | pools.pools_in_use(svc.engine))
        counts = held.pool_workers(svc.redis, names)
    except Exception as exc:
        log.warning("worker pools unknown: %s", exc)
        return {}
    return {name: "ok" if counts[name] else "no worker" for name in names}
