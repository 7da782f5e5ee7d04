"""The HTTP API: blueprints, and the OpenAPI document generated from their schemas."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from app.api.schemas import ErrorSchema
from app.errors import http_exception_body
from app.metrics import HTTP_DURATION, HTTP_REQUESTS
from app.services import Services


class PredqApi(Api):
    """flask-smorest's Api, with its HTTP errors rendered in predq's error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        return http_exception_body(error)


def services() -> Services:
    return current_app.extensions["predq"]


def observe_requests(app: Flask) -> None:
    """Count every answered request by route template (not path: ids would explode the labels)."""

    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            HTTP_DURATION.labels(route, request.method).observe(time.perf_counter() - started)
        return response


def register_api(app: Flask) -> None:
    from app.api import health, models, predictions

    app.config.update(
        API_TITLE="predq",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
    )
    api = PredqApi(app)
    for blueprint in (predictions.blp, models.blp, health.blp):
        api.register_blueprint(blueprint)
