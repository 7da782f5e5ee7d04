"""POST /v1/models/{name}/predictions and GET /v1/predictions/{id}."""

from __future__ import annotations

from typing import Any

from flask import g, request

from app.access import ratelimit
from app.access.auth import current_principal
from app.api import decoding
from app.api.blueprint import Blueprint
from app.api.schemas import FeedbackRecordedSchema, FeedbackSchema, JobSchema
from app.errors import UnsupportedMediaType
from app.lifecycle import feedback
from app.predictions import jobs, submit
from app.predictions.view import FINISHED
from app.services import current_services

blp = Blueprint("predictions", __name__, url_prefix="/v1", description="Submit and poll predictions")


@blp.before_request
def _require_json() -> None:
    # Checked before the body is read, so a body of another type is never parsed.
    if request.method != "POST" or request.is_json:
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
@blp.alt_response(404, schema="Error", description="Unknown model, version or alias.")
@blp.alt_response(409, schema="Error", description="Idempotency-Key reused with another body.")
@blp.alt_response(413, schema="Error", description="Too many rows or bytes.")
@blp.alt_response(415, schema="Error", description="Body is neither JSON nor an Arrow IPC stream.")
@blp.alt_response(422, schema="Error", description="A row does not fit the model's signature.")
def submit_prediction(name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = current_services()
    wait = decoding.wait_seconds(request.args.get("wait"))
    idempotency_key = decoding.idempotency_key(request.headers.get("Idempotency-Key"))
    body: decoding.PredictionRequest | decoding.ArrowOptions
    if request.mimetype == decoding.ARROW_STREAM:
        inputs, body = decoding.arrow_request(decoding.body_of(request), request.args.to_dict())
    else:
        json_body = decoding.prediction_request(decoding.body_of(request))
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
    )
    location = {"Location": f"/v1/predictions/{view['id']}"}
    return view, 200 if view["status"] in FINISHED else 202, location


@blp.route("/predictions/<string:job_id>/feedback", methods=["POST"])
@blp.arguments(FeedbackSchema)
@blp.response(201, FeedbackRecordedSchema)
@blp.alt_response(404, schema="Error", description="No such job (or another API key's).")
@blp.alt_response(409, schema="Error", description="Feedback for this job was already recorded.")
@blp.alt_response(
    422,
    schema="Error",
    description="Wrong number of labels, a label the model cannot have, or the job has not succeeded.",
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


def _caller_key_id() -> int | None:
    """The id of the API key making this request: the owner of the job it submits."""
    principal = current_principal()
    return principal.key_id if principal is not None else None
