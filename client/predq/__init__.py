"""The predq client: ``predq.Client`` (and ``predq.AsyncClient``) for a predq server.

    import predq
    with predq.Client("http://127.0.0.1:8000", api_key="pq_...") as client:
        frame = client.predict("demo", dataframe)      # a DataFrame in, a DataFrame out

Errors are in ``predq.errors`` (and here); every submit is safe to retry.
"""

from predq._policy import Backoff
from predq.aio import AsyncClient, AsyncJob
from predq.client import Client, Job, as_completed, wait_all
from predq.errors import (
    AuthError,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidInput,
    JobCancelled,
    JobExpired,
    JobFailed,
    NotFound,
    Overloaded,
    PredqError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)

__all__ = [
    "AsyncClient", "AsyncJob", "AuthError", "Backoff", "Client", "Conflict", "ConnectionFailed",
    "DeadlineExceeded", "InvalidInput", "Job", "JobCancelled", "JobExpired", "JobFailed", "NotFound",
    "Overloaded", "PredqError", "RateLimited", "ServerError", "ServiceUnavailable", "as_completed",
    "wait_all",
]  # fmt: skip
