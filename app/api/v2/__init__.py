"""The Open Inference Protocol (V2, REST), as KServe, MLServer and Triton speak it: a second
door onto predq's queue, batching and storage (README, "The Open Inference Protocol").

- ``protocol.py``: the protocol's objects (msgspec types that decode requests and write
  ``/openapi.json``), the binary extension's body split.
- ``tensors.py``: a signature as V2 metadata; input tensors as the model's columns; a job's
  outputs as output tensors.
- ``routes.py``: the routes; ``documents.py``: their part of ``/openapi.json``.

Errors under /v2 are V2's ``{"error": "..."}``, made by predq's one error handler as it writes
the body (``app.errors.shape_errors_under``): raised anywhere (auth, rate limits, routing, the
registry), with predq's status and headers.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.typing import ResponseReturnValue

from app.api.v2 import protocol, routes
from app.errors import shape_errors_under

PREFIX = "/v2"


def register(app: Flask, api: Any) -> None:
    protocol.register_schemas(api.spec)
    api.register_blueprint(routes.blp)
    shape_errors_under(app, PREFIX, v2_error)


def v2_error(body: dict[str, Any], status: int, headers: dict[str, str]) -> ResponseReturnValue:
    """predq's error body in V2's shape: its message alone."""
    return {"error": str(body["error"]["message"])}, status, headers
