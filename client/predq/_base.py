"""What ``predq.Client`` and ``predq.AsyncClient`` share: their configuration, and every step
of a call that does no I/O.

As httpx's ``BaseClient`` does for its two clients: the base holds the constructor's arguments
and builds what is sent (the connection pool's settings, a submit's body and headers, how many
rows one request carries) and reads what comes back (a job's outputs, whether to try again);
``Client`` and ``AsyncClient`` add only the sending and the waiting, one blocking, one awaiting.
The same for ``BaseJob`` under ``Job`` and ``AsyncJob``.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from predq import _rows
from predq._policy import Backoff, Deadline, error_of, give_up, retryable
from predq.errors import DeadlineExceeded, InvalidInput, PredqError, job_error
from predq.types import JobView, Output

#: What a server that predates the view's ``done`` calls finished.
FINISHED = ("succeeded", "failed")
#: What either client's ``_json`` catches and hands to ``_retry_delay``: no answer, or an error answer.
CALL_ERRORS = (httpx.TransportError, PredqError)

#: The httpx client each of ours sends through, and the transport it takes.
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


def default_url() -> str:
    return os.environ.get("PREDQ_URL", "http://127.0.0.1:8000")


class HttpConfig(TypedDict):
    """What the httpx client is opened with, besides the transport (the same for both)."""

    base_url: str
    headers: dict[str, str]
    limits: httpx.Limits


@dataclass(frozen=True)
class Submission:
    """One ``predict`` or ``submit``: its rows as sent, what it asks for, how long the server
    may hold each request (``wait``) and the deadline the whole call keeps."""

    model: str
    rows: Any
    inputs: list[Any]
    options: _rows.SubmitOptions
    wait: float
    deadline: Deadline

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model}/predictions"

    def request(self, inputs: list[Any]) -> dict[str, Any]:
        """The body, headers and query of one request carrying ``inputs`` (some or all of the rows)."""
        hold = self.deadline.hold(self.wait) if self.wait > 0 else 0
        return _rows.submit_request(inputs, self.options, hold, self.deadline.remaining())

    def answer(self, outputs: list[Output]) -> Any:
        """The outputs as the rows came: a DataFrame aligned to a DataFrame's index, else a list."""
        return _rows.to_frame(outputs, self.rows.index) if _rows.is_frame(self.rows) else outputs


class BaseClient(ABC, Generic[HttpT, TransportT]):
    """A predq server's address, key, deadline, rows per request and retry policy (see ``predq.Client``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_rows: int = 1000,
        max_explained_rows: int = 100,
        max_concurrency: int = 8,
        backoff: Backoff | None = None,
        transport: TransportT | None = None,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get("PREDQ_API_KEY")
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_explained_rows = max_explained_rows
        self.max_concurrency = max_concurrency
        self.backoff = backoff or Backoff()
        config = HttpConfig(
            base_url=base_url or default_url(),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            limits=httpx.Limits(max_connections=max(10, max_concurrency * 2)),
        )
        self._http: HttpT = self._open(config, transport)

    @abstractmethod
    def _open(self, config: HttpConfig, transport: TransportT | None) -> HttpT:
        """The httpx client (sync or async) every call of this client goes through."""

    def _deadline(self, timeout: float | None = None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _submission(
        self, model: str, rows: Any, options: _rows.SubmitOptions, wait: float, timeout: float | None
    ) -> Submission:
        return Submission(model, rows, _rows.to_inputs(rows), options, wait, self._deadline(timeout))

    def _parts(self, submission: Submission) -> list[list[Any]]:
        """The submission's rows in requests of at most the rows one request of its kind carries."""
        return _rows.split(submission.inputs, self._rows_per_request(submission.options))

    def _rows_per_request(self, options: _rows.SubmitOptions) -> int:
        """Explained requests have their own cap (the server's EXPLAIN_MAX_ROWS)."""
        return self.max_explained_rows if options.explain else self.max_rows

    def _take_fewer_rows(self, error: InvalidInput, options: _rows.SubmitOptions) -> None:
        """Split requests of this kind by the lower limit the server's 413 names, from now on;
        ``error`` is raised when it is any other error."""
        if not _rows.fewer_rows_allowed(error, self._rows_per_request(options)):
            raise error
        if options.explain:
            self.max_explained_rows = error.details["limit"]
        else:
            self.max_rows = error.details["limit"]

    @staticmethod
    def _read(response: httpx.Response) -> Any:
        """The JSON of a successful answer; an error answer raises its PredqError."""
        if response.status_code >= 400:
            raise error_of(response)
        return response.json()

    def _retry_delay(
        self, attempt: int, error: BaseException, deadline: Deadline, transport_retries: bool
    ) -> float:
        """How long to wait before trying again after ``error``; raises when no other try is allowed."""
        delay = self.backoff.delay(attempt, error)
        if not retryable(error, transport_retries) or delay >= deadline.remaining():
            raise give_up(error, deadline) from None
        return delay


ClientT = TypeVar("ClientT", bound="BaseClient[Any, Any]")


class BaseJob(Generic[ClientT]):
    """A submitted prediction job: its id, its last view, and reading that view."""

    def __init__(self, client: ClientT, view: JobView) -> None:
        self.client = client
        self.view = view
        self.id: str = view["id"]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.view['status']}>"

    @property
    def _path(self) -> str:
        return f"/v1/predictions/{self.id}"

    @property
    def done(self) -> bool:
        """Whether the job has its answer (as of the last view): the server's ``done``, so a
        status this client does not know yet is read right."""
        return bool(self.view.get("done", self.view["status"] in FINISHED))

    def _waiting(self, deadline: Deadline) -> bool:
        """Whether to poll again: the job is not finished and the deadline leaves time to;
        DeadlineExceeded when it does not."""
        if self.done:
            return False
        if deadline.remaining() <= 0.1:
            raise DeadlineExceeded(
                f"job {self.id} is still {self.view['status']} after {deadline.seconds:g} s",
                code="deadline_exceeded",
                details={"job_id": self.id},
            )
        return True

    def _pause(self, hold: float, asked_at: float, deadline: Deadline) -> float:
        """Seconds to wait before the next poll: none, unless the server answered a long-poll
        well before ``hold`` without the job finishing (its Redis is down): then poll, but not
        in a tight loop."""
        if self.done or time.monotonic() - asked_at >= hold / 2:
            return 0.0
        return min(0.25, deadline.remaining())

    def _outputs(self) -> list[Output]:
        """The outputs; a job done without them (failed, expired, cancelled) raises its JobFailed."""
        if self.view["status"] != "succeeded" and self.view.get("error"):
            raise job_error(self.view)
        return self.view.get("outputs") or []
