"""When to retry, how long to wait, and the deadline every call keeps (shared by both clients).

A submit carries an Idempotency-Key, so it is retried like a read: after a dropped
connection the server answers the retry with the job the first attempt created.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from predq.errors import (
    ConnectionFailed,
    DeadlineExceeded,
    PredqError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    from_response,
)

#: Server answers worth another try (each carries Retry-After, or gets backoff).
RETRIED = (RateLimited, ServiceUnavailable, ServerError)


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff ("full jitter"): attempt n waits uniform(0, min(cap, base·2ⁿ))."""

    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int, error: BaseException) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # What the server asked for, plus a little, so clients refused together do not return together.
            return float(retry_after) + random.uniform(0, self.base)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class Deadline:
    """One call's deadline: every attempt, wait and long-poll of the call fits before it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def hold(self, wait: float) -> float:
        """How long the server may hold a request (``?wait``) and still answer before the deadline."""
        return round(max(0.0, min(wait, 30.0, self.remaining() - 0.1)), 3)

    def timeout(self) -> httpx.Timeout:
        remaining = self.remaining()
        return httpx.Timeout(None if math.isinf(remaining) else max(0.05, remaining))


def error_of(response: httpx.Response) -> PredqError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    raw = response.headers.get("Retry-After")
    try:
        retry_after = float(raw) if raw is not None else None
    except ValueError:
        retry_after = None
    return from_response(response.status_code, body, retry_after)


def retryable(error: BaseException, transport_retries: bool) -> bool:
    """Whether to try again after ``error`` (a server answer or a transport error)."""
    if isinstance(error, RETRIED):
        return True
    if isinstance(error, httpx.ConnectError):
        return True  # the request never reached the server
    return transport_retries and isinstance(error, httpx.TransportError)


def give_up(error: BaseException, deadline: Deadline) -> PredqError:
    """What to raise when no other try is allowed: the server's error as it is; a transport
    error as DeadlineExceeded (tried until the deadline) or ConnectionFailed (not retried)."""
    if isinstance(error, PredqError):
        return error
    reason = f"{type(error).__name__}: {error}"
    if deadline.remaining() <= 0.1 or retryable(error, transport_retries=True):
        return DeadlineExceeded(
            f"no answer within {deadline.seconds:g} s ({reason})", code="deadline_exceeded"
        )
    return ConnectionFailed(f"the connection failed and this request is not retried ({reason})")
