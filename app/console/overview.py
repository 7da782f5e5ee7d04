"""The overview: health of what predq depends on, each worker's last heartbeat, queues, the
last hour's throughput and the batch jobs running."""

from __future__ import annotations

from flask import redirect, url_for
from flask.typing import ResponseReturnValue

from app import heartbeats, throughput
from app.console import charts, queries
from app.console.blueprint import bp, page, viewer
from app.services import current_services


@bp.route("", methods=["GET"])
def root() -> ResponseReturnValue:
    return redirect(url_for("console.overview"))


@bp.route("/overview", methods=["GET"])
def overview() -> ResponseReturnValue:
    svc = current_services()
    checks = queries.health(svc)
    redis_up = checks["redis"] == "ok"
    workers = heartbeats.workers(svc.redis, svc.settings.worker_silent_seconds) if redis_up else []
    models = svc.registry.list_models()
    # The last 60 finished minutes (they never change: their chart is drawn once a minute),
    # and the minute under way as a number.
    minutes = throughput.last_minutes(svc.redis, 61) if redis_up else []
    finished = tuple((minute, (m["ok"], m["failed"])) for minute, m in minutes[:-1])
    return page(
        "overview.html",
        checks=checks,
        workers=workers,
        pools=queries.worker_pools(svc) if redis_up else {},
        queues=queries.queues(svc, models) if redis_up else [],
        chart=charts.throughput(finished) if finished else None,
        last_hour={"ok": sum(ok for _, (ok, _) in finished), "failed": sum(f for _, (_, f) in finished)},
        this_minute=minutes[-1][1] if minutes else {"ok": 0, "failed": 0},
        batch_jobs=queries.running_batch_jobs(svc, viewer()),
        silent_after=svc.settings.worker_silent_seconds,
    )
