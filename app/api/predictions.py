"""POST /v1/models/{name}/predictions and GET /v1/predictions/{id}."""

from __future__ import annotations

from typing import Any

from flask import g, request

from app.access import ratelimit
from app.access.auth import current_principal
from app.api import decoding
from app.api.blueprint import Blueprint
from app.api.bodies import body_of
from app.api.lifecycle_schemas import FeedbackRecordedSchema, FeedbackSchema
from app.api.openapi import refusals
from app.api.schemas import JobSchema
from app.errors import UnsupportedMediaType
from app.lifecycle import feedback
from app.predictions import ending, jobs, steering, submit
from app.predictions.view import FINISHED
from app.services import current_services

blp = Blueprint("predictions", __name__, url_prefix="/v1", description="Submit and poll predictions")


@blp.before_request
def _require_json() -> None:
    # Checked before the body is read, so a body of another type is never parsed.
    if request.method != "POST" or request.is_json or request.endpoint == "predictions.cancel_prediction":
        return
    if request.mimetype == decoding.ARROW_STREAM and request.endpoint == "predictions.submit_prediction":
        return
    raise UnsupportedMediaType(
        f"send the body as application/json (or, to submit, {decoding.ARROW_STREAM}),"
        f" not {request.mimetype or 'no content type'}"
    )


@blp.route("/models/<string:name>/predictions", methods=["POST"])
@blp.doc(**decoding.SUBMIT_DOC)
@ratelimit.sends_own_rate_charge
@blp.alt_response(202, schema=JobSchema, description="Accepted: the job is stored and queued.")
@blp.alt_response(200, schema=JobSchema, description="Finished at once (every row cached, or ?wait).")
@blp.alt_response(400, schema="Error", description="The body is not JSON (or not Unicode text).")
@blp.alt_response(404, schema="Error", description="Unknown model, version or alias.")
@blp.alt_response(415, schema="Error", description="Body is neither JSON nor an Arrow IPC stream.")
@refusals(
    blp,
    {
        403: "A priority above this API key's ceiling.",
        409: "Idempotency-Key reused with another body (by this API key).",
        413: "More rows than this deployment's limits: with explain, more than EXPLAIN_MAX_ROWS;"
        " or a body beyond MAX_BODY_BYTES.",
        422: "The rows do not fit this model's signature (GET /v1/models/{name}): a row of the"
        " wrong width or feature names, a value beyond float32 for a tree model; or explain for"
        " a model shap cannot explain exactly (explanation_unsupported); a priority or deadline_ms"
        " out of range. Row and field are named. A callback_url with credentials or a private"
        " address, or with no webhook secret to sign it (webhook_secret_missing).",
        503: "The model's queue is full (overloaded), or the database is unreachable.",
    },
)
def submit_prediction(name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Submit rows for prediction; poll the job at its Location (or wait with ?wait=S).

    The body may instead be an Arrow IPC stream (Content-Type
    application/vnd.apache.arrow.stream), one column per feature, with version, alias,
    routing_key, explain, explain_classes, priority and deadline_ms in the query string. That
    binary protocol is left out of this document; see the README.
    """
    svc = current_services()
    wait = decoding.wait_seconds(request.args.get("wait"))
    idempotency_key = decoding.idempotency_key(request.headers.get("Idempotency-Key"))
    body: decoding.PredictionRequest | decoding.ArrowOptions
    if request.mimetype == decoding.ARROW_STREAM:
        inputs, body = decoding.arrow_request(body_of(request), request.args.to_dict())
    else:
        json_body = decoding.prediction_request(body_of(request))
        inputs, body = json_body.inputs, json_body
    view = submit.submit(
        svc,
        name,
        inputs,
        version=body.get("version"),
        alias=body.get("alias"),
        idempotency_key=idempotency_key,
        request_id=g.get("request_id"),
        routing_key=body.get("routing_key"),
        wait=min(wait, svc.settings.max_wait_seconds),
        rate=ratelimit.pending_charge(),
        owner=_caller_key_id(),
        explain=body.explain_mode(),
        priority=steering.priority_for(current_principal(), body.get("priority")),
        deadline_ms=steering.deadline_ms_for(svc, name, body.get("deadline_ms")),
        callback_url=body.get("callback_url"),
    )
    location = {"Location": f"/v1/predictions/{view['id']}"}
    return view, 200 if view["status"] in FINISHED else 202, location


@blp.route("/predictions/<string:job_id>/feedback", methods=["POST"])
@blp.arguments(FeedbackSchema)
@blp.response(201, FeedbackRecordedSchema)
@blp.alt_response(404, schema="Error", description="No such job (or another API key's).")
@refusals(
    blp,
    {
        409: "Feedback for this job was already recorded.",
        422: "The labels do not fit the job: not one per row, a label the model cannot have,"
        " every label null, or the job has not succeeded.",
    },
)
def post_feedback(body: dict[str, Any], job_id: str) -> tuple[dict[str, Any], int]:
    """The true label (classifiers) or value (regressors) of each row; null skips a row."""
    return feedback.record(current_services(), job_id, body["labels"], current_principal()), 201


@blp.route("/predictions/<string:job_id>", methods=["GET"])
@blp.doc(**decoding.POLL_DOC)
@blp.alt_response(200, schema=JobSchema, description="The job, finished or not.")
@blp.alt_response(404, schema="Error", description="No such job (or another API key's).")
def get_prediction(job_id: str) -> tuple[dict[str, Any], int]:
    svc = current_services()
    wait = decoding.wait_seconds(request.args.get("wait"))
    wait = min(wait, svc.settings.max_wait_seconds)
    return jobs.get(svc, job_id, wait=wait, reader=current_principal()), 200


@blp.route("/predictions/<string:job_id>/cancel", methods=["POST"])
@blp.alt_response(200, schema=JobSchema, description="Cancelled: the job, its status cancelled (never run).")
@blp.alt_response(404, schema="Error", description="No such job (or another API key's).")
@refusals(blp, {409: "The job is running or done (its status in details): only a queued job is cancelled."})
def cancel_prediction(job_id: str) -> tuple[dict[str, Any], int]:
    """Cancel a queued job: it ends cancelled and is never run (it stays readable)."""
    return ending.cancel(current_services(), job_id, current_principal()), 200


def _caller_key_id() -> int | None:
    """The id of the API key making this request: the owner of the job it submits."""
    principal = current_principal()
    return principal.key_id if principal is not None else None
