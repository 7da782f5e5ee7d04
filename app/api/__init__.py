"""The HTTP API: blueprints, and the OpenAPI document generated from their schemas."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from app import logs
from app.api.schemas import ErrorSchema
from app.config import Settings
from app.errors import error_response
from app.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger("predq.requests")


class PredqApi(Api):
    """flask-smorest's Api, with its HTTP errors rendered in predq's error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        return error_response(error)


def observe_requests(app: Flask, log_requests: bool = True) -> None:
    """Give each request an id, count it by route template (ids in paths would explode the
    labels), and log one line for it carrying the job it concerned."""

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        given = request.headers.get("X-Request-ID", "")
        # A caller's id is kept (to follow its own traces) when it is short and printable.
        g.request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        logs.reset(request_id=g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
        HTTP_DURATION.labels(route, request.method).observe(seconds)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if log_requests:
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "status": response.status_code,
                    "route": route,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
        return response


def register_api(app: Flask, settings: Settings) -> None:
    from app.api import batch_jobs, decoding, docs, health, models, predictions, v2, webhooks
    from app.api.openapi import ContractMarshmallowPlugin, ContractPlugin

    app.config.update(
        API_TITLE="predq",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Served by predq itself (app/api/docs.py): /docs needs no internet access.
        OPENAPI_SWAGGER_UI_URL=docs.SWAGGER_UI_URL,
    )
    app.register_blueprint(docs.blp)
    api = PredqApi(
        app,
        spec_kwargs={
            "marshmallow_plugin": ContractMarshmallowPlugin(),
            "extra_plugins": [ContractPlugin(app, settings.auth_enabled)],
        },
    )
    decoding.register_schemas(api.spec, settings.max_rows_per_request)
    batch_jobs.register_schemas(api.spec)
    models.register_schemas(api.spec)
    for blueprint in (predictions.blp, batch_jobs.blp, models.blp, webhooks.blp, health.blp):
        api.register_blueprint(blueprint)
    v2.register(app, api)
