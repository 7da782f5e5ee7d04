"""The /v2 operations in ``/openapi.json``: their bodies are the protocol's objects
(app/api/v2/protocol.py, the same msgspec types the route decodes with), their errors V2's
``{"error": "..."}``, and the binary tensor data extension a binary media type."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from app.api.openapi import REFUSALS, RETRY_AFTER
from app.api.v2.protocol import (
    BINARY,
    HEADER_LENGTH,
    ErrorMessage,
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    Readiness,
    ServerMetadata,
    ref,
)

try:
    VERSION = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]["version"]
except (OSError, KeyError, tomllib.TOMLDecodeError):  # an image without pyproject.toml
    VERSION = "unknown"

JOB_ID = {
    "predq-job-id": {
        "description": "The job's id (readable on /v1/predictions/{id}).",
        "schema": {"type": "string"},
    }
}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(description, ref(ErrorMessage), headers)


_JOB = {"$ref": "#/components/schemas/Job"}
_NOT_FOUND = _error("No such model, version or alias.")

SERVER_METADATA = {
    "responses": {"200": _json("The server's name, version and extensions.", ref(ServerMetadata))}
}
LIVE = {"responses": {"200": _json("Alive.", ref(Liveness))}}
READY = {
    "responses": {
        "200": _json("Database, Redis and a worker answered.", ref(Readiness)),
        "503": _error("A dependency is down; the message names it.", RETRY_AFTER),
    },
    REFUSALS: {"503": "A dependency is down."},
}
MODEL_METADATA = {
    "responses": {"200": _json("Inputs and outputs, from the version's signature.", ref(ModelMetadata)),
                  "404": _NOT_FOUND},
}  # fmt: skip
MODEL_READY = {"responses": {"200": _json("Registered and servable.", ref(Readiness)), "404": _NOT_FOUND}}

_BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": f"The JSON inference request ({HEADER_LENGTH} bytes), then the binary inputs' bytes.",
}
INFER_REFUSALS = {
    400: "The tensors do not fit the model (a name, shape, datatype or value, named with its row), an"
    " output it lacks, or the binary extension's lengths disagree with the body.",
    413: "More rows than MAX_ROWS_PER_REQUEST, or a body beyond MAX_BODY_BYTES.",
    403: "A priority parameter above this API key's ceiling.",
    503: "The job did not finish within V2_WAIT_SECONDS (read it on /v1) or its deadline_ms passed"
    " before it started, the model's queue is full, or the database is unreachable.",
}
INFER = {
    "parameters": [
        {"in": "header", "name": HEADER_LENGTH, "required": False,
         "description": "Binary tensor data extension: the JSON's length; the binary inputs follow it.",
         "schema": {"type": "integer", "minimum": 1}},
        {"in": "header", "name": "Prefer", "required": False,
         "description": "respond-async: answer 202 with the job's Location at once.",
         "schema": {"type": "string", "enum": ["respond-async"]}},
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ref(InferenceRequest)}, BINARY: _BINARY_BODY},
    },
    "responses": {
        "200": {
            "description": "The outputs asked for (binary ones after the JSON, with " + HEADER_LENGTH + ").",
            "headers": JOB_ID,
            "content": {
                "application/json": {"schema": ref(InferenceResponse)},
                BINARY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "202": _json("Prefer: respond-async: the job, stored and queued.", _JOB,
                     {"Location": {"schema": {"type": "string"}}} | JOB_ID),
        "404": _NOT_FOUND,
        "409": _error("The job was cancelled (on /v1) while it waited."),
        "415": _error("A body neither JSON nor " + BINARY + "."),
        **{str(status): _error(why, RETRY_AFTER | JOB_ID if status == 503 else None)
           for status, why in INFER_REFUSALS.items()},
    },
    REFUSALS: {str(status): why for status, why in INFER_REFUSALS.items()},
}  # fmt: skip
