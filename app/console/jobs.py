"""Jobs (find one by id, a model's recent failures, a job's page) and batch jobs (progress that
htmx refreshes while they run, cancel with a confirmation step, download the result)."""

from __future__ import annotations

import uuid

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from app.access.auth import may_read
from app.batch_jobs import jobs as batch_jobs
from app.batch_jobs.results import result_response
from app.console import queries
from app.console.blueprint import bp, page, viewer
from app.errors import BatchJobFinished, JobNotFound
from app.services import current_services


@bp.route("/jobs", methods=["GET"])
def jobs() -> ResponseReturnValue:
    svc = current_services()
    wanted = request.args.get("id", "").strip()
    if wanted:
        return redirect(url_for("console.job", job_id=wanted))
    who = viewer()
    names = [m["name"] for m in svc.registry.list_models()]
    model = request.args.get("model", "")
    chosen = model if model in names else (names[0] if names else None)
    return page(
        "jobs.html",
        names=names,
        chosen=chosen,
        failed=queries.failed_jobs(svc, chosen, who) if chosen else [],
        own=queries.own_recent_jobs(svc, who) if who is not None and not who.allows("admin") else None,
    )


@bp.route("/jobs/<string:job_id>", methods=["GET"])
def job(job_id: str) -> ResponseReturnValue:
    svc = current_services()
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"There is no job with id {job_id!r}.") from None
    row = queries.job(svc, parsed)
    if row is None or not may_read(viewer(), row["owner_key_id"]):
        raise JobNotFound(f"There is no job with id {job_id!r}.")  # another key's job: the same answer
    return page("job.html", job=row)


@bp.route("/batch-jobs", methods=["GET"])
def batch_jobs_list() -> ResponseReturnValue:
    views = queries.batch_jobs_page(current_services(), viewer())
    return page("batch_jobs.html", jobs=views, finished=queries.batch_finished)


@bp.route("/batch-jobs/<string:job_id>/progress", methods=["GET"])
def batch_job_progress(job_id: str) -> ResponseReturnValue:
    """One job's progress row (htmx swaps it in every second; a finished job's row stops asking)."""
    view = batch_jobs.get(current_services(), job_id, viewer())
    return page("batch_job_progress.html", job=view, finished=queries.batch_finished(view))


@bp.route("/batch-jobs/<string:job_id>/cancel", methods=["GET", "POST"])
def batch_job_cancel(job_id: str) -> ResponseReturnValue:
    svc = current_services()
    view = batch_jobs.get(svc, job_id, viewer())
    if request.method == "GET":
        return page("cancel.html", job=view)
    try:
        batch_jobs.cancel(svc, job_id, viewer())
    except BatchJobFinished as finished:
        flash(finished.message)
    else:
        flash(f"Batch job {job_id} is cancelled: its queued chunks are dropped, running ones finish.")
    return redirect(url_for("console.batch_jobs_list"), 303)


@bp.route("/batch-jobs/<string:job_id>/result", methods=["GET"])
def batch_job_result(job_id: str) -> ResponseReturnValue:
    return result_response(current_services(), job_id, viewer())
