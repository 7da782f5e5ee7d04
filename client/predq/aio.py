"""``predq.AsyncClient``: the predictions side of ``predq.Client`` for asyncio code.

The same configuration, deadline, Idempotency-Key and retry rules (predq/_base.py,
predq/_policy.py); the registry's admin verbs and ``score_file`` are on the synchronous client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx

from predq import _rows
from predq._base import CALL_ERRORS, BaseClient, BaseJob, HttpConfig, Submission
from predq._policy import Deadline
from predq.errors import InvalidInput
from predq.types import Model, Output


class AsyncJob(BaseJob["AsyncClient"]):
    async def status(self) -> str:
        self.view = await self.client._json("GET", self._path)
        return self.view["status"]

    async def cancel(self) -> AsyncJob:
        """As ``Job.cancel``."""
        self.view = await self.client._json("POST", f"{self._path}/cancel")
        return self

    async def result(self, timeout: float | None = None) -> list[Output]:
        deadline = self.client._deadline(timeout)
        while self._waiting(deadline):
            hold, asked_at = deadline.hold(30), time.monotonic()
            self.view = await self.client._json("GET", self._path, deadline, params={"wait": hold})
            await asyncio.sleep(self._pause(hold, asked_at, deadline))
        return self._outputs()


class AsyncClient(BaseClient[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """As ``predq.Client``: ``async with AsyncClient(url, key) as client: await client.predict(...)``."""

    def _open(self, config: HttpConfig, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(**config, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def predict(
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
        options = _rows.SubmitOptions(
            version, alias, routing_key, explain=explain, priority=priority, follow_call=True
        )
        submission = self._submission(model, rows, options, wait, timeout)
        try:
            return submission.answer(await self._in_parts(submission))
        except InvalidInput as exc:
            self._take_fewer_rows(exc, options)
            return submission.answer(await self._in_parts(submission))

    async def _in_parts(self, submission: Submission) -> list[Output]:
        """The outputs of every part, ``max_concurrency`` parts at a time, in order."""
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(part: list[Any]) -> list[Output]:
            async with gate:
                job = await self._submit(submission, part)
                return await job.result(submission.deadline.remaining())

        parts = await asyncio.gather(*(one(part) for part in self._parts(submission)))
        return [o for part_outputs in parts for o in part_outputs]

    async def submit(
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
    ) -> AsyncJob:
        options = _rows.SubmitOptions(
            version, alias, routing_key, idempotency_key, explain, priority, deadline_ms, callback_url
        )
        submission = self._submission(model, rows, options, wait, timeout)
        return await self._submit(submission, submission.inputs)

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, await self._json("GET", f"/v1/predictions/{job_id}"))

    async def cancel(self, job: AsyncJob | str) -> AsyncJob:
        """As ``Client.cancel``."""
        handle = job if isinstance(job, AsyncJob) else AsyncJob(self, {"id": job, "status": "queued"})
        return await handle.cancel()

    async def models(self) -> list[Model]:
        return cast("list[Model]", (await self._json("GET", "/v1/models"))["models"])

    async def model(self, name: str) -> Model:
        return cast(Model, await self._json("GET", f"/v1/models/{name}"))

    async def _submit(self, submission: Submission, inputs: list[Any]) -> AsyncJob:
        view = await self._json("POST", submission.path, submission.deadline, **submission.request(inputs))
        return AsyncJob(self, view)

    async def _json(self, method: str, path: str, deadline: Deadline | None = None, **request: Any) -> Any:
        deadline = deadline or self._deadline()
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, timeout=deadline.timeout(), **request)
                return self._read(response)
            except CALL_ERRORS as error:
                delay = self._retry_delay(attempt, error, deadline, transport_retries=True)
            await asyncio.sleep(delay)
            attempt += 1
