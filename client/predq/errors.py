"""Every error the client raises: one per kind of server answer, plus the client's own.

    PredqError                     any of these (status, code, message, details)
    ├── InvalidInput               400, 413, 415, 422: the request is wrong (row, field)
    ├── AuthError                  401, 403: no key, a bad key, or a key without the scope
    ├── NotFound                   404: unknown model, version, alias, job or batch job
    ├── Conflict                   409: Idempotency-Key reused with another body, feedback
    │                                   given twice, a batch job already finished
    ├── RateLimited                429 (retried until the deadline first)
    ├── ServiceUnavailable         503 (retried until the deadline first)
    │   └── Overloaded             503 overloaded: the model's queue is full
    ├── ServerError                other 5xx (retried until the deadline first)
    ├── DeadlineExceeded           the call's deadline passed (no answer, or the job is not done)
    ├── ConnectionFailed           a connection broke on a request that is not retried (an upload)
    └── JobFailed                  the job finished ``failed``; ``error`` is the job's error

The server's error body is ``{"error": {"code", "message", "details"}}``: ``code`` and
``details`` are kept on the exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PredqError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}


class InvalidInput(PredqError):
    @property
    def row(self) -> int | None:
        """The row at fault, when the server named one."""
        return self.details.get("row")

    @property
    def field(self) -> str | int | None:
        """The field (feature name or index) at fault, when the server named one."""
        return self.details.get("field")


class AuthError(PredqError):
    pass


class NotFound(PredqError):
    pass


class Conflict(PredqError):
    pass


class _RetryLater(PredqError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(_RetryLater):
    pass


class ServiceUnavailable(_RetryLater):
    pass


class Overloaded(ServiceUnavailable):
    pass


class ServerError(_RetryLater):
    pass


class DeadlineExceeded(PredqError):
    pass


class ConnectionFailed(PredqError):
    pass


class JobFailed(PredqError):
    """A job done without outputs: failed, or (its subclasses) expired or cancelled."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(
            f"job {job['id']} {job.get('status', 'failed')}: {error.get('message', 'no reason given')}",
            code=error.get("code", ""),
            details=error.get("details") or {},
        )
        self.job = job
        self.error = error


class JobExpired(JobFailed):
    """The job was not started before its deadline (``deadline_ms``): it was never run."""


class JobCancelled(JobFailed):
    """The job was cancelled before it started: it was never run."""


def job_error(job: Mapping[str, Any]) -> JobFailed:
    """The exception for a job done without outputs, by its status."""
    return {"expired": JobExpired, "cancelled": JobCancelled}.get(job.get("status", ""), JobFailed)(job)


def from_response(status: int, body: Any, retry_after: float | None) -> PredqError:
    """The exception for an error answer of the server."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    message = error.get("message") or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": error.get("code", ""),
        "details": error.get("details"),
    }
    if status in (400, 413, 415, 422):
        return InvalidInput(message, **kwargs)
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 409:
        return Conflict(message, **kwargs)
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kwargs)
    if status == 503:
        kind = Overloaded if kwargs["code"] == "overloaded" else ServiceUnavailable
        return kind(message, retry_after=retry_after, **kwargs)
    if status >= 500:
        return ServerError(message, retry_after=retry_after, **kwargs)
    return PredqError(message, **kwargs)
