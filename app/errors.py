"""Every error predq reports to a client, and the one handler that renders them.

    PredqError                       500 internal_error
    ├── MalformedJSON                400 malformed_json
    ├── MalformedArrow               400 malformed_arrow
    ├── InvalidInferenceRequest      400 invalid_inference_request (the Open Inference Protocol's)
    ├── Unauthorized                 401 unauthorized (with WWW-Authenticate: Bearer)
    ├── Forbidden                    403 forbidden (the scope needed in details)
    ├── NotFound                     404
    │   ├── ModelNotFound                model_not_found
    │   ├── VersionNotFound              version_not_found
    │   ├── AliasNotFound                alias_not_found
    │   ├── JobNotFound                  job_not_found
    │   ├── BatchJobNotFound             batch_job_not_found (also: no result yet)
    │   └── WebhookNotFound              webhook_not_found (an endpoint or one of its deliveries)
    ├── IdempotencyConflict          409 idempotency_conflict
    ├── NothingToRollBack            409 nothing_to_roll_back
    ├── FeedbackConflict             409 feedback_conflict
    ├── BatchJobFinished             409 batch_job_finished (cannot be cancelled)
    ├── ImportDropped                409 import_dropped (a dropped import cannot be accepted)
    ├── JobNotCancellable            409 job_not_cancellable (running or done: its status in details)
    ├── WebhookSecretServerWide      409 webhook_secret_server_wide (auth off: WEBHOOK_SECRET signs)
    ├── PayloadTooLarge              413 payload_too_large (rows and the limit in details)
    │   └── FileTooLarge                 (a batch job's file)
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── InvalidInput                 422 invalid_input (row and field in details)
    │   ├── ExplanationUnsupported       explanation_unsupported (the model type in details)
    │   └── WebhookSecretMissing         webhook_secret_missing (a callback_url with no secret to sign it)
    ├── RateLimited                  429 rate_limited (with Retry-After)
    ├── ServiceUnavailable           503 service_unavailable (with Retry-After)
    │   ├── Overloaded                   overloaded (a model's queue is too deep)
    │   └── StoreUnavailable             store_unavailable (ARTIFACT_ROOT or BATCH_ROOT unreachable)
    ├── RegistryError                    raised by the registry CLI and workers
    │   └── ArtifactIntegrityError       artifact_integrity_error (sha256 mismatch)
    └── ApiKeyError                      raised by the API key CLI

The body is always ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class PredqError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        return {}

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        }


class MalformedJSON(PredqError):
    status, code = 400, "malformed_json"


class MalformedArrow(PredqError):
    status, code = 400, "malformed_arrow"


class InvalidInferenceRequest(PredqError):
    """A /v2 inference request the protocol refuses (a tensor's shape, datatype or value; the
    binary extension's lengths): 400, as the protocol has it, naming the tensor and row."""

    status, code = 400, "invalid_inference_request"


class Unauthorized(PredqError):
    status, code = 401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="predq"'}


class Forbidden(PredqError):
    status, code = 403, "forbidden"


class NotFound(PredqError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class BatchJobNotFound(NotFound):
    code = "batch_job_not_found"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class WebhookSecretServerWide(PredqError):
    status, code = 409, "webhook_secret_server_wide"


class BatchJobFinished(PredqError):
    status, code = 409, "batch_job_finished"


class ImportDropped(PredqError):
    status, code = 409, "import_dropped"


class JobNotCancellable(PredqError):
    status, code = 409, "job_not_cancellable"


class IdempotencyConflict(PredqError):
    status, code = 409, "idempotency_conflict"


class NothingToRollBack(PredqError):
    status, code = 409, "nothing_to_roll_back"


class FeedbackConflict(PredqError):
    status, code = 409, "feedback_conflict"


class PayloadTooLarge(PredqError):
    # One code for every 413, werkzeug's for a body too large too (_HTTP_CODES below):
    # too many rows has ``rows`` and ``limit`` in details, a file too large its ``limit``.
    status, code = 413, "payload_too_large"


class FileTooLarge(PayloadTooLarge):
    pass


class UnsupportedMediaType(PredqError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(PredqError):
    status, code = 422, "invalid_input"


class ExplanationUnsupported(InvalidInput):
    code = "explanation_unsupported"


class WebhookSecretMissing(InvalidInput):
    code = "webhook_secret_missing"


class _RetryLater(PredqError):
    """An error the client should retry after ``retry_after`` seconds (sent as Retry-After)."""

    def __init__(self, message: str, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_RetryLater):
    status, code = 429, "rate_limited"


class ServiceUnavailable(_RetryLater):
    status, code = 503, "service_unavailable"


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"


class RegistryError(PredqError):
    code = "registry_error"


class ArtifactIntegrityError(RegistryError):
    code = "artifact_integrity_error"


class ApiKeyError(PredqError):
    code = "api_key_error"


# Werkzeug's own errors (routing, body size, method) keep their status but get our shape.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def http_exception_body(error: HTTPException) -> Any:
    if error.response is not None:
        # The exception carries its finished response (``abort(response)``): send it as it is.
        return error.response
    status = error.code or 500
    details: dict[str, Any] = {}
    # webargs (under flask-smorest) attaches field messages to the exception it aborts with.
    messages = getattr(error, "data", {}).get("messages")
    if messages:
        details["fields"] = messages.get("json", messages)
    if status == 400 and messages and messages.get("json") == ["Invalid JSON body."]:
        return MalformedJSON("request body is not valid JSON").to_body(), 400
    code = _HTTP_CODES.get(status, "http_error" if status < 500 else "internal_error")
    message = error.description or error.name
    if status == 422:
        message = "request body does not match the schema"
    # werkzeug's own headers stay (a 405's Allow, which RFC 9110 requires); the body is ours.
    headers = {key: value for key, value in error.get_headers() if key.lower() != "content-type"}
    return {"error": {"code": code, "message": message, "details": details}}, status, headers


#: A protocol's own error body, made from predq's: ``(body, status, headers)`` in and out.
ErrorShape = Callable[[dict[str, Any], int, dict[str, str]], ResponseReturnValue]


def shape_errors_under(app: Flask, prefix: str, shape: ErrorShape) -> None:
    """Answer every error under the URL ``prefix`` in ``shape`` (the Open Inference Protocol's
    ``{"error": "..."}`` under /v2): its routes' own errors, auth and rate limits before them,
    and URLs under it that match no route, which no blueprint's errorhandler ever sees."""
    app.extensions.setdefault("error_shapes", {})[prefix] = shape


def error_response(error: Exception) -> ResponseReturnValue:
    """The answer to any error a request raised: predq's JSON body, or the shape the URL's
    protocol speaks (:func:`shape_errors_under`), made once, as the body is written."""
    answer = _predq_answer(error)
    if isinstance(answer, tuple):
        for prefix, shape in current_app.extensions.get("error_shapes", {}).items():
            if request.path == prefix or request.path.startswith(prefix + "/"):
                body, status, *headers = answer
                return shape(body, status, headers[0] if headers else {})
    return answer


def _predq_answer(error: Exception) -> Any:
    if isinstance(error, (OperationalError, InterfaceError)):
        # Wherever the database could not be reached: 503, never a 500 and never a 202.
        error = ServiceUnavailable(
            "the database is unavailable; try again shortly", cause=type(error).__name__
        )
    if isinstance(error, PredqError):
        if error.status >= 500:
            log.error("request failed: %s", error.message)
        return error.to_body(), error.status, error.headers()
    if isinstance(error, HTTPException):
        return http_exception_body(error)
    log.exception("unhandled error", exc_info=error)
    return {"error": {"code": "internal_error", "message": "internal error", "details": {}}}, 500, {}


def register_error_handlers(app: Flask) -> None:
    # One handler for every error: predq's own, a database out of reach, HTTP errors, the rest.
    app.register_error_handler(Exception, error_response)
