"""``predq.Client``: predictions, batch jobs and the registry over one httpx connection pool.

Every call has one deadline (``timeout``): retries, backoff and long-polls all fit in it.
A submit always carries an Idempotency-Key (the caller's, or one made here), so a retry
after a timeout or a dropped connection gets the job the first attempt created, never a
second one. ``429`` and ``503`` are retried when the server says (Retry-After), connection
errors and other ``5xx`` with jittered exponential backoff; other ``4xx`` raise at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as futures_completed
from pathlib import Path
from typing import Any, cast

import httpx

from predq import _batch, _rows
from predq._base import CALL_ERRORS, BaseClient, BaseJob, HttpConfig, Submission
from predq._policy import Deadline, error_of
from predq.errors import DeadlineExceeded, InvalidInput, JobFailed
from predq.types import BatchJob, DriftReport, FeedbackRecorded, Model, Output, Quality


class Job(BaseJob["Client"]):
    """A submitted prediction job: ``result()`` waits for its outputs."""

    def status(self) -> str:
        """The job's status now (one request)."""
        self.view = self.client._json("GET", self._path)
        return self.view["status"]

    def cancel(self) -> Job:
        """Cancel the job while it is queued (it ends cancelled, never run); Conflict (409) once
        it is running or done."""
        self.view = self.client._json("POST", f"{self._path}/cancel")
        return self

    def result(self, timeout: float | None = None) -> list[Output]:
        """The outputs once the job finishes; JobFailed if it failed, DeadlineExceeded after ``timeout``."""
        deadline = self.client._deadline(timeout)
        while self._waiting(deadline):
            hold, asked_at = deadline.hold(30), time.monotonic()
            self.view = self.client._json("GET", self._path, deadline, params={"wait": hold})
            time.sleep(self._pause(hold, asked_at, deadline))
        return self._outputs()


def wait_all(jobs: Iterable[Job], timeout: float | None = None) -> list[list[Output]]:
    """Every job's outputs, in order, within one deadline."""
    jobs = list(jobs)
    deadline = Deadline(timeout if timeout is not None else max((j.client.timeout for j in jobs), default=0))
    return [job.result(deadline.remaining()) for job in jobs]


def as_completed(jobs: Iterable[Job], timeout: float | None = None) -> Iterator[Job]:
    """The jobs as they finish (their ``result()`` then answers at once), within one deadline."""
    jobs = list(jobs)
    if not jobs:
        return
    deadline = Deadline(timeout if timeout is not None else jobs[0].client.timeout)
    with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
        futures = {pool.submit(_settle, job, deadline): job for job in jobs}
        for future in futures_completed(futures):
            future.result()
            yield futures[future]


def _settle(job: Job, deadline: Deadline) -> None:
    try:
        job.result(deadline.remaining())
    except JobFailed:
        pass  # finished all the same: its result() raises it to the caller


class Client(BaseClient[httpx.Client, httpx.BaseTransport]):
    """A predq server: ``Client(base_url, api_key)``; both default to PREDQ_URL and PREDQ_API_KEY.

    ``timeout`` is each call's deadline in seconds; ``max_rows`` the rows per request
    (larger inputs are split and sent ``max_concurrency`` at a time), ``max_explained_rows``
    those of a request asking for explanations (the server's EXPLAIN_MAX_ROWS; both are
    lowered when the server says it takes fewer); ``transport`` an httpx transport (say,
    ``httpx.WSGITransport`` for an app in this process).
    """

    def _open(self, config: HttpConfig, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(**config, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- predictions ------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        rows: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
        explain: bool | str = False,
        priority: str | None = None,
        wait: float = 30.0,
        timeout: float | None = None,
    ) -> Any:
        """The outputs of ``rows`` (a list per row; a DataFrame aligned to a DataFrame's index).

        Submits and waits (``wait`` seconds per request, at most 30), then long-polls until
        every job is done or ``timeout`` (default: the client's) passes. ``explain``: True
        adds each row's explanation (a DataFrame gets an ``explanation`` column), "all"
        every class's too. ``priority``: high, normal or low (default: the API key's). Each
        request carries what is left of ``timeout`` as its deadline: a job no one waits for
        any more expires on the server instead of running.
        """
        options = _rows.SubmitOptions(
            version, alias, routing_key, explain=explain, priority=priority, follow_call=True
        )
        submission = self._submission(model, rows, options, wait, timeout)
        try:
            return submission.answer(self._in_parts(submission))
        except InvalidInput as exc:
            self._take_fewer_rows(exc, options)
            return submission.answer(self._in_parts(submission))

    def _in_parts(self, submission: Submission) -> list[Output]:
        """The outputs of every part, ``max_concurrency`` parts at a time, in order."""

        def one(part: list[Any]) -> list[Output]:
            return self._submit(submission, part).result(submission.deadline.remaining())

        parts = self._parts(submission)
        if len(parts) == 1:
            return one(parts[0])
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return [o for part_outputs in pool.map(one, parts) for o in part_outputs]

    def submit(
        self,
        model: str,
        rows: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
        idempotency_key: str | None = None,
        explain: bool | str = False,
        priority: str | None = None,
        deadline_ms: int | None = None,
        callback_url: str | None = None,
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> Job:
        """Submit one job (at most the server's rows per request) and return its handle.

        ``deadline_ms``: not started within it, the job ends expired (None: the server's default).
        ``callback_url``: the server posts the finished job there, signed with this key's webhook
        secret (``POST /v1/webhook-secret``); the job takes the stored road.
        """
        options = _rows.SubmitOptions(
            version, alias, routing_key, idempotency_key, explain, priority, deadline_ms, callback_url
        )
        submission = self._submission(model, rows, options, wait, timeout)
        return self._submit(submission, submission.inputs)

    def job(self, job_id: str) -> Job:
        """A handle on a job submitted earlier (by this key)."""
        return Job(self, self._json("GET", f"/v1/predictions/{job_id}"))

    def cancel(self, job: Job | str) -> Job:
        """Cancel a queued job (a handle or its id): see ``Job.cancel``."""
        handle = job if isinstance(job, Job) else Job(self, {"id": job, "status": "queued"})
        return handle.cancel()

    def _submit(self, submission: Submission, inputs: list[Any]) -> Job:
        view = self._json("POST", submission.path, submission.deadline, **submission.request(inputs))
        return Job(self, view)

    # -- batch jobs -------------------------------------------------------------------------

    def score_file(
        self,
        model: str,
        path: str | Path,
        output_path: str | Path,
        *,
        id_column: str | None = None,
        version: int | None = None,
        alias: str | None = None,
        progress: bool = True,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> BatchJob:
        """Score a .csv or .parquet file as a batch job and write the result to ``output_path``
        (CSV when it ends in .csv, else Parquet); returns the finished batch job.

        ``timeout`` defaults to none: a big file takes as long as it takes.
        """
        path, output_path = Path(path), Path(output_path)
        content_type, params = _batch.upload(path, output_path, id_column, version, alias)
        deadline = Deadline(float("inf") if timeout is None else timeout)
        with open(path, "rb") as body:
            # No Idempotency-Key for batch jobs: only a request that never reached the
            # server (a connection refused) is sent again, rewound.
            job: BatchJob = self._json(
                "POST",
                f"/v1/models/{model}/batch-jobs",
                deadline,
                content=body,
                headers={"Content-Type": content_type},
                params=params,
                transport_retries=False,
                before_retry=lambda: body.seek(0),
            )
        job = self._follow(job, deadline, progress, poll_seconds)
        if job["result"] is not None:
            with self._http.stream("GET", job["result"]["url"], timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                with open(output_path, "wb") as sink:
                    for piece in response.iter_bytes(1 << 20):
                        sink.write(piece)
        return job

    def batch_job(self, job_id: str) -> BatchJob:
        return cast(BatchJob, self._json("GET", f"/v1/batch-jobs/{job_id}"))

    def cancel_batch_job(self, job_id: str) -> BatchJob:
        return cast(BatchJob, self._json("DELETE", f"/v1/batch-jobs/{job_id}"))

    def _follow(self, job: BatchJob, deadline: Deadline, progress: bool, poll: float) -> BatchJob:
        """Long-poll the job (``?wait``) until it finishes: up to 30 s a request, or ``poll``
        while a progress bar is shown, so the bar moves."""
        bar = _batch.progress_bar(job["rows"]["total"], progress)
        path = f"/v1/batch-jobs/{job['id']}"
        try:
            while job["status"] not in _batch.FINISHED:
                if deadline.remaining() <= 0.1:
                    raise DeadlineExceeded(
                        f"batch job {job['id']} is still {job['status']}", code="deadline_exceeded"
                    )
                hold, asked_at = deadline.hold(poll if progress else 30), time.monotonic()
                # Each read keeps the client's timeout beyond its hold (a score_file without
                # a timeout has no deadline of its own).
                call = Deadline(min(deadline.remaining(), hold + self.timeout))
                job = cast(BatchJob, self._json("GET", path, call, params={"wait": hold}))
                bar(job["rows"]["done"])
                time.sleep(_batch.pause(job, hold, poll, time.monotonic() - asked_at, deadline.remaining()))
        finally:
            bar(None)
        return job

    # -- the registry and admin verbs ------------------------------------------------------

    def models(self) -> list[Model]:
        return cast("list[Model]", self._json("GET", "/v1/models")["models"])

    def model(self, name: str) -> Model:
        return cast(Model, self._json("GET", f"/v1/models/{name}"))

    def promote(self, name: str, version: int, alias: str = "champion", reason: str | None = None) -> Model:
        body = {"version": version} | ({"reason": reason} if reason else {})
        return cast(Model, self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json=body))

    def rollback(self, name: str, alias: str = "champion", reason: str | None = None) -> Model:
        body = {"reason": reason} if reason else {}
        return cast(Model, self._json("POST", f"/v1/models/{name}/aliases/{alias}/rollback", json=body))

    def set_traffic(
        self, name: str, routes: list[dict[str, Any]], shadow: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"routes": routes} | ({"shadow": shadow} if shadow else {})
        return cast("dict[str, Any]", self._json("PUT", f"/v1/models/{name}/traffic", json=body))

    def feedback(self, job_id: str, labels: list[Any]) -> FeedbackRecorded:
        body = {"labels": labels}
        return cast(FeedbackRecorded, self._json("POST", f"/v1/predictions/{job_id}/feedback", json=body))

    def quality(self, name: str) -> Quality:
        return cast(Quality, self._json("GET", f"/v1/models/{name}/quality"))

    def ab_report(self, name: str, a: int, b: int) -> dict[str, Any]:
        params = {"a": a, "b": b}
        return cast("dict[str, Any]", self._json("GET", f"/v1/models/{name}/ab-report", params=params))

    def drift(self, name: str) -> list[DriftReport]:
        return cast("list[DriftReport]", self._json("GET", f"/v1/models/{name}/drift")["reports"])

    # -- one call, with retries ----------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        deadline: Deadline | None = None,
        *,
        transport_retries: bool = True,
        before_retry: Callable[[], Any] | None = None,
        **request: Any,
    ) -> Any:
        """The JSON answer of one call, tried again while the error allows and the deadline
        (by default the client's ``timeout`` from now) lasts."""
        deadline = deadline or self._deadline()
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, timeout=deadline.timeout(), **request)
                return self._read(response)
            except CALL_ERRORS as error:
                delay = self._retry_delay(attempt, error, deadline, transport_retries)
            time.sleep(delay)
            attempt += 1
            if before_retry is not None:
                before_retry()
