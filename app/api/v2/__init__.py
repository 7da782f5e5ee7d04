"""The Open Inference Protocol (V2, REST), as KServe, MLServer and Triton speak it: a second
door onto predq's queue, batching and storage (README, "The Open Inference Protocol").

- ``protocol.py``: the protocol's objects (msgspec types that decode requests and write
  ``/openapi.json``), the binary extension's body split.
- ``tensors.py``: a signature as V2 metadata; input tensors as the model's columns; a job's
  outputs as output tensors.
- ``routes.py``: the routes; ``documents.py``: their part of ``/openapi.json``.

Errors on these routes are V2's ``{"error": "..."}``: ``v2_error_shape`` rewrites predq's
own error body (raised anywhere: auth, rate limits, routing, the registry) into it.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, Response, request

from app.api.v2 import protocol, routes

PREFIX = "/v2"


def register(app: Flask, api: Any) -> None:
    protocol.register_schemas(api.spec)
    api.register_blueprint(routes.blp)

    @app.after_request
    def v2_error_shape(response: Response) -> Response:
        if response.status_code < 400 or not (
            request.path == PREFIX or request.path.startswith(PREFIX + "/")
        ):
            return response
        if response.mimetype != "application/json":
            return response
        document = orjson.loads(response.get_data())
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict):
            response.set_data(orjson.dumps({"error": str(error.get("message", ""))}))
        return response
