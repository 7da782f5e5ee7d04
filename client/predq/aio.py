"""``predq.AsyncClient``: the predictions side of ``predq.Client`` for asyncio code.

The same deadline, Idempotency-Key and retry rules (predq/_policy.py); the registry's
admin verbs and ``score_file`` are on the synchronous client.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from predq import _rows
from predq._policy import Backoff, Deadline, error_of, give_up, retryable
from predq.client import FINISHED, default_url
from predq.errors import DeadlineExceeded, InvalidInput, JobFailed
from predq.types import JobView, Model, Output


class AsyncJob:
    def __init__(self, client: AsyncClient, view: JobView) -> None:
        self.client = client
        self.view = view
        self.id: str = view["id"]

    async def status(self) -> str:
        self.view = await self.client._json(
            "GET", f"/v1/predictions/{self.id}", Deadline(self.client.timeout)
        )
        return self.view["status"]

    async def result(self, timeout: float | None = None) -> list[Output]:
        deadline = Deadline(self.client.timeout if timeout is None else timeout)
        while self.view["status"] not in FINISHED:
            if deadline.remaining() <= 0.1:
                raise DeadlineExceeded(
                    f"job {self.id} is still {self.view['status']} after {deadline.seconds:g} s",
                    code="deadline_exceeded",
                    details={"job_id": self.id},
                )
            hold, asked_at = deadline.hold(30), time.monotonic()
            self.view = await self.client._json(
                "GET", f"/v1/predictions/{self.id}", deadline, params={"wait": hold}
            )
            if self.view["status"] not in FINISHED and time.monotonic() - asked_at < hold / 2:
                # The server could not hold the poll (its Redis is down): poll, but not in a tight loop.
                await asyncio.sleep(min(0.25, deadline.remaining()))
        if self.view["status"] == "failed":
            raise JobFailed(self.view)
        return self.view["outputs"] or []


class AsyncClient:
    """As ``predq.Client``: ``async with AsyncClient(url, key) as client: await client.predict(...)``."""

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get("PREDQ_API_KEY")
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_explained_rows = max_explained_rows
        self.max_concurrency = max_concurrency
        self.backoff = backoff or Backoff()
        self._http = httpx.AsyncClient(
            base_url=base_url or default_url(),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            limits=httpx.Limits(max_connections=max(10, max_concurrency * 2)),
            transport=transport,
        )

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
        wait: float = 30.0,
        timeout: float | None = None,
    ) -> Any:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        inputs = _rows.to_inputs(rows)
        options = _rows.SubmitOptions(version, alias, routing_key, explain=explain)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(part: list[Any]) -> list[dict[str, Any]]:
            async with gate:
                job = await self._submit(model, part, options, wait, deadline)
                return await job.result(deadline.remaining())

        async def in_parts() -> list[Any]:
            parts = _rows.split(inputs, _rows.rows_per_request(self, options))
            return [o for part in await asyncio.gather(*(one(p) for p in parts)) for o in part]

        try:
            outputs = await in_parts()
        except InvalidInput as exc:
            if not _rows.fewer_rows_allowed(exc, _rows.rows_per_request(self, options)):
                raise
            _rows.take_fewer_rows(self, options, exc.details["limit"])
            outputs = await in_parts()
        return _rows.to_frame(outputs, rows.index) if _rows.is_frame(rows) else outputs

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
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> AsyncJob:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        options = _rows.SubmitOptions(version, alias, routing_key, idempotency_key, explain)
        return await self._submit(model, _rows.to_inputs(rows), options, wait, deadline)

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, await self._json("GET", f"/v1/predictions/{job_id}", Deadline(self.timeout)))

    async def models(self) -> list[Model]:
        return (await self._json("GET", "/v1/models", Deadline(self.timeout)))["models"]

    async def model(self, name: str) -> Model:
        return await self._json("GET", f"/v1/models/{name}", Deadline(self.timeout))

    async def _submit(
        self, model: str, inputs: list[Any], options: _rows.SubmitOptions, wait: float, deadline: Deadline
    ) -> AsyncJob:
        request = _rows.submit_request(inputs, options, deadline.hold(wait) if wait > 0 else 0)
        return AsyncJob(
            self, await self._json("POST", f"/v1/models/{model}/predictions", deadline, **request)
        )

    async def _json(self, method: str, path: str, deadline: Deadline, **request: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, timeout=deadline.timeout(), **request)
            except httpx.TransportError as exc:
                error: BaseException = exc
            else:
                if response.status_code < 400:
                    return response.json()
                error = error_of(response)
            delay = self.backoff.delay(attempt, error)
            if not retryable(error, transport_retries=True) or delay >= deadline.remaining():
                raise give_up(error, deadline) from None
            await asyncio.sleep(delay)
            attempt += 1
