"""The Open Inference Protocol's (V2) REST routes under /v2: health, metadata and infer.

Infer takes the road a /v1 submit that waits takes (app/predictions/submit.py): the rows are
checked as an Arrow request's are, the job is stored and batched like any other, and the
route waits up to V2_WAIT_SECONDS for it. V2 clients expect the answer in the response
(tritonclient raises on anything but 200), so when the wait runs out the answer is a 503
with Retry-After and the job's id (``predq-job-id``), the job still readable on /v1; with
``Prefer: respond-async`` (RFC 7240) it is a 202 with the job's Location at once.
"""

from __future__ import annotations

from typing import Any

import msgspec
from flask import Response, g, request
from msgspec import UNSET

from app.access import ratelimit
from app.access.auth import current_principal
from app.api.blueprint import Blueprint
from app.api.bodies import body_of
from app.api.health import readiness
from app.api.v2 import documents, protocol, tensors
from app.db import PRIORITIES
from app.errors import InvalidInferenceRequest, InvalidInput, ServiceUnavailable, UnsupportedMediaType
from app.predictions import steering, submit
from app.predictions.view import FINISHED, JobStatus
from app.services import current_services

blp = Blueprint("v2", __name__, url_prefix="/v2", description="The Open Inference Protocol (V2, REST)")

JOB_ID_HEADER = "predq-job-id"
_JSON_TYPES = (None, "", "application/json", protocol.BINARY)


@blp.route("", methods=["GET"])
@blp.doc(**documents.SERVER_METADATA)
def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version, extensions."""
    return {"name": "predq", "version": documents.VERSION, "extensions": ["binary_tensor_data"]}


@blp.route("/health/live", methods=["GET"])
@blp.doc(**documents.LIVE)
def server_live() -> dict[str, Any]:
    """The API process is alive (as /healthz)."""
    return {"live": True}


@blp.route("/health/ready", methods=["GET"])
@blp.doc(**documents.READY)
def server_ready() -> tuple[dict[str, Any], int]:
    """Database, Redis and a worker answered (as /readyz)."""
    checks = readiness(current_services())
    down = [f"{name} {state}" for name, state in checks.items() if state != "ok"]
    if down:
        raise ServiceUnavailable(f"not ready: {', '.join(down)}")
    return {"ready": True}, 200


@blp.route("/models/<string:name>", methods=["GET"])
@blp.route("/models/<string:name>/versions/<int:version>", methods=["GET"])
@blp.doc(**documents.MODEL_METADATA)
def model_metadata(name: str, version: int | None = None) -> dict[str, Any]:
    """A model's inputs and outputs (from its signature); its default version unless named."""
    svc = current_services()
    served = svc.registry.resolve(name, version=version)
    versions = [str(v["version"]) for v in svc.registry.describe(name)["versions"]]
    return {
        "name": name,
        "versions": versions,
        "platform": "scikit-learn",
        "inputs": [msgspec.to_builtins(t) for t in tensors.input_metadata(served.signature)],
        "outputs": [msgspec.to_builtins(t) for t in tensors.output_metadata(served.signature)],
    }


@blp.route("/models/<string:name>/ready", methods=["GET"])
@blp.route("/models/<string:name>/versions/<int:version>/ready", methods=["GET"])
@blp.doc(**documents.MODEL_READY)
def model_ready(name: str, version: int | None = None) -> dict[str, Any]:
    """The model (version) is registered and can be served."""
    current_services().registry.resolve(name, version=version)
    return {"name": name, "ready": True}


@blp.route("/models/<string:name>/infer", methods=["POST"])
@blp.route("/models/<string:name>/versions/<int:version>/infer", methods=["POST"])
@blp.doc(**documents.INFER)
@ratelimit.sends_own_rate_charge
def infer(name: str, version: int | None = None) -> Response | tuple[Any, int, dict[str, str]]:
    """Inference: input tensors in, the model's outputs out (JSON, or binary tensor data).

    The rows are checked as a /v1 request's are; the version routed as /v1 routes (a traffic
    policy, sticky by the routing_key parameter) unless the path or the alias parameter names it.
    """
    if request.mimetype not in _JSON_TYPES:
        raise UnsupportedMediaType(f"send application/json or {protocol.BINARY}, not {request.mimetype}")
    svc = current_services()
    header, tail = protocol.split_body(body_of(request), request.headers.get(protocol.HEADER_LENGTH))
    body = protocol.inference_request(header)
    alias = protocol.parameter(body.parameters, "alias", str, "request")
    routing_key = protocol.parameter(body.parameters, "routing_key", str, "request")
    if alias is not None and version is not None:
        raise InvalidInferenceRequest("name a version in the path or an alias parameter, not both")
    served = svc.registry.resolve(name, version=version, alias=alias) if version or alias else None
    asynchronous = "respond-async" in request.headers.get("Prefer", "")
    signature = (served or svc.registry.resolve(name, version=None, alias=None)).signature
    wanted = _wanted_outputs(body, signature)
    matrix = tensors.input_matrix(body, tail, signature)
    principal = current_principal()
    try:
        view = submit.submit(
            svc, name, matrix, version=version, alias=alias, routing_key=routing_key,
            request_id=g.get("request_id"), rate=ratelimit.pending_charge(),
            wait=0.0 if asynchronous else svc.settings.v2_wait_seconds,
            owner=principal.key_id if principal is not None else None,
            priority=steering.priority_for(principal, _priority(body.parameters)),
            deadline_ms=steering.deadline_ms_for(svc, name, _deadline_ms(body.parameters)),
        )  # fmt: skip
    except InvalidInput as exc:
        # The row check names the row and the field: the input of that name, or a column of
        # the one input of a model without feature names.
        where = "" if signature["feature_names"] else f"input {tensors.SINGLE_INPUT!r}, "
        raise InvalidInferenceRequest(f"{where}{exc.message}") from None
    if view["status"] != JobStatus.SUCCEEDED:
        return _unanswered(view, asynchronous)
    # The version that served it (a traffic policy may pick another than the default's).
    signature = svc.registry.resolve(name, version=view["model"]["version"]).signature
    return _answer(body, view, signature, wanted)


def _priority(parameters: Any) -> str | None:
    """The priority parameter: predq's name (high, normal, low), or Triton's number (1 the
    highest; 0, the client's default, is none given)."""
    asked = parameters.get("priority") if parameters is not UNSET else None
    if asked is None or asked == 0:
        return None
    if isinstance(asked, str) and asked in PRIORITIES:
        return asked
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return PRIORITIES[min(asked, len(PRIORITIES)) - 1]
    raise InvalidInferenceRequest(f"parameter 'priority' must be one of {', '.join(PRIORITIES)} or 1, 2, 3")


def _deadline_ms(parameters: Any) -> int | None:
    asked: int | None = protocol.parameter(parameters, "deadline_ms", int, "request")
    if asked is not None and not 1 <= asked <= steering.MAX_DEADLINE_MS:
        raise InvalidInferenceRequest(f"parameter 'deadline_ms' must be 1 to {steering.MAX_DEADLINE_MS}")
    return asked


def _unanswered(view: dict[str, Any], asynchronous: bool) -> tuple[Any, int, dict[str, str]]:
    """A job with no outputs to send: queued (202 when asked not to wait, else 503), or ended
    without them (failed, expired, cancelled)."""
    location = {"Location": f"/v1/predictions/{view['id']}", JOB_ID_HEADER: view["id"]}
    if view["status"] not in FINISHED:
        if asynchronous:
            return view, 202, location
        message = f"job {view['id']} is not finished yet; read it at {location['Location']}"
        return {"error": message}, 503, {"Retry-After": "1"} | location
    error = view.get("error") or {}
    message = f"job {view['id']} {view['status']}: {error.get('message', 'no outputs')}"
    if view["status"] == JobStatus.FAILED:
        # The model refused the rows (prediction_failed): the request's; anything else is ours.
        return {"error": message}, 400 if error.get("code") == "prediction_failed" else 500, location
    if view["status"] == JobStatus.EXPIRED:  # not started before its deadline
        return {"error": message}, 503, {"Retry-After": "1"} | location
    return {"error": message}, 409, location  # cancelled (on /v1) while it waited


def _wanted_outputs(body: protocol.InferenceRequest, signature: dict[str, Any]) -> list[tuple[str, bool]]:
    """(name, binary?) of each output to send: those asked for, else all the model has."""
    every = [t.name for t in tensors.output_metadata(signature)]
    default = protocol.parameter(body.parameters, "binary_data_output", bool, "request") or False
    if body.outputs is UNSET:
        return [(name, default) for name in every]
    wanted = []
    for output in body.outputs:
        if output.name not in every:
            raise InvalidInferenceRequest(f"unknown output {output.name!r}: the model has {', '.join(every)}")
        where = f"output {output.name!r}"
        if protocol.parameter(output.parameters, "classification", int, where):
            raise InvalidInferenceRequest(f"{where}: the classification extension is not supported")
        binary = protocol.parameter(output.parameters, "binary_data", bool, where)
        wanted.append((output.name, default if binary is None else binary))
    return wanted


def _answer(
    body: protocol.InferenceRequest,
    view: dict[str, Any],
    signature: dict[str, Any],
    wanted: list[tuple[str, bool]],
) -> Response:
    objects, blobs = tensors.output_tensors(view["outputs"], signature, wanted)
    document = {
        "model_name": view["model"]["name"],
        "model_version": str(view["model"]["version"]),
        # The protocol returns the request's id when it gave one; else the job's.
        "id": view["id"] if body.id is UNSET else body.id,
        "parameters": {JOB_ID_HEADER: view["id"]},
        "outputs": objects,
    }
    header = tensors.encode(document)
    headers = {JOB_ID_HEADER: view["id"]}
    if not blobs:
        return Response(header, 200, headers, content_type="application/json")
    headers[protocol.HEADER_LENGTH] = str(len(header))
    return Response(b"".join([header, *blobs]), 200, headers, content_type=protocol.BINARY)
