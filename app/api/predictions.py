"""POST /v1/models/{name}/predictions and GET /v1/predictions/{id}."""

from __future__ import annotations

from typing import Any

from flask import g, request

from app import feedback, jobs
from app.api import services
from app.api.blueprint import Blueprint
from app.api.schemas import (
    FeedbackRecordedSchema,
    FeedbackSchema,
    JobSchema,
    PredictionRequestSchema,
    SubmitHeadersSchema,
    WaitQuerySchema,
)
from app.errors import UnsupportedMediaType

blp = Blueprint("predictions", __name__, url_prefix="/v1", description="Submit and poll predictions")

# Instances, not classes: given a class, webargs builds a new schema on every request,
# which costs more than the parsing itself on the submit and poll paths.
WAIT_QUERY = WaitQuerySchema()
SUBMIT_HEADERS = SubmitHeadersSchema()
PREDICTION_REQUEST = PredictionRequestSchema()


@blp.before_request
def _require_json() -> None:
    # Checked before webargs parses, which would otherwise treat a non-JSON body as empty.
    if request.method == "POST" and not request.is_json:
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.mimetype or 'no content type'}"
        )


@blp.route("/models/<string:name>/predictions", methods=["POST"])
@blp.arguments(WAIT_QUERY, location="query", as_kwargs=True)
@blp.arguments(SUBMIT_HEADERS, location="headers", as_kwargs=True)
@blp.arguments(PREDICTION_REQUEST)
@blp.alt_response(202, schema=JobSchema, description="Accepted: the job is stored and queued.")
@blp.alt_response(200, schema=JobSchema, description="Finished at once (every row cached, or ?wait).")
@blp.alt_response(404, schema="Error", description="Unknown model, version or alias.")
@blp.alt_response(409, schema="Error", description="Idempotency-Key reused with another body.")
@blp.alt_response(413, schema="Error", description="Too many rows or bytes.")
@blp.alt_response(415, schema="Error", description="Body is not JSON.")
@blp.alt_response(422, schema="Error", description="A row does not fit the model's signature.")
def submit_prediction(
    body: dict[str, Any], name: str, wait: float, idempotency_key: str | None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = services()
    view = jobs.submit(
        svc,
        name,
        body["inputs"],
        version=body.get("version"),
        alias=body.get("alias"),
        idempotency_key=idempotency_key,
        request_id=g.get("request_id"),
        routing_key=body.get("routing_key"),
        wait=min(wait, svc.settings.max_wait_seconds),
    )
    location = {"Location": f"/v1/predictions/{view['id']}"}
    return view, 200 if view["status"] in jobs.FINISHED else 202, location


@blp.route("/predictions/<string:job_id>/feedback", methods=["POST"])
@blp.arguments(FeedbackSchema)
@blp.response(201, FeedbackRecordedSchema)
@blp.alt_response(404, schema="Error", description="No such job.")
@blp.alt_response(409, schema="Error", description="Feedback for this job was already recorded.")
@blp.alt_response(
    422,
    schema="Error",
    description="Wrong number of labels, a label the model cannot have, or the job has not succeeded.",
)
def post_feedback(body: dict[str, Any], job_id: str) -> tuple[dict[str, Any], int]:
    """The true label (classifiers) or value (regressors) of each row; null skips a row."""
    return feedback.record(services(), job_id, body["labels"]), 201


@blp.route("/predictions/<string:job_id>", methods=["GET"])
@blp.arguments(WAIT_QUERY, location="query", as_kwargs=True)
@blp.alt_response(200, schema=JobSchema, description="The job, finished or not.")
@blp.alt_response(404, schema="Error", description="No such job.")
def get_prediction(job_id: str, wait: float) -> tuple[dict[str, Any], int]:
    svc = services()
    return jobs.get(svc, job_id, wait=min(wait, svc.settings.max_wait_seconds)), 200
