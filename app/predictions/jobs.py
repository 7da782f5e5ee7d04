"""Reading prediction jobs back: a poll, and a long-poll that waits for a worker's hand-off.

A job belongs to the API key that submitted it: only that key or an admin key reads it
(others get the 404 an unknown id gets, so ids do not leak; the rule is
app/access/auth.py's ``may_read``). With auth off jobs have no owner and every caller
reads every job.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError
from sqlalchemy import select

from app import logs
from app.access.auth import may_read
from app.db import Job
from app.db.ids import by_id
from app.errors import JobNotFound
from app.long_polls import wait_on
from app.predictions.items import decode_view
from app.predictions.queue import done_key, result_key
from app.predictions.view import FINISHED, job_view
from app.services import Services
from app.webhooks.endpoints import job_delivery

if TYPE_CHECKING:
    from app.access.auth import Principal

log = logging.getLogger(__name__)


def get(svc: Services, job_id: str, wait: float = 0.0, reader: Principal | None = None) -> dict[str, Any]:
    """A job's public view; with ``wait`` > 0, hold until it finishes or ``wait`` passes.

    ``reader`` is the calling API key (None with auth off): a job it may not read is not found.
    """
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"no job with id {job_id!r}", id=job_id) from None
    logs.bind(job_id=str(parsed))
    view = read(svc, parsed, reader)
    if wait > 0 and view["status"] not in FINISHED:
        view = wait_for(svc, view["id"], wait) or read(svc, parsed, reader)
    return with_delivery_state(svc, view)


def with_delivery_state(svc: Services, view: dict[str, Any]) -> dict[str, Any]:
    """The view with its callback's delivery state as the outbox has it now (a job with a
    callback_url only: one more read, which no other job pays)."""
    webhook = view.get("webhook")
    if webhook is None or view["status"] not in FINISHED:
        return view
    with svc.engine.connect() as conn:
        found = job_delivery(conn, view["id"])
    if found is None:
        return view
    current = {key: found[key] for key in ("state", "attempts", "last_status_code")}
    return view | {"webhook": webhook | current}


def wait_for(svc: Services, job_id: str, seconds: float) -> dict[str, Any] | None:
    """The finished job's view once a worker hands it over, or None after ``seconds``.

    The worker pushes the view onto a short-lived list; BLMOVE from that list to itself
    returns it and leaves it there, so every client waiting on the job gets it.
    """
    raw = wait_on(svc, done_key(job_id), seconds, job_id)
    return decode_view(raw)[1] if raw is not None else None


def read(svc: Services, job_id: uuid.UUID, reader: Principal | None) -> dict[str, Any]:
    """The job's view from Redis, else the database; JobNotFound when ``reader`` may not read it."""
    found: tuple[int | None, dict[str, Any]] | None = None
    try:
        raw = svc.cache.get(result_key(str(job_id)))
        if raw is not None:
            found = decode_view(cast(bytes, raw))
    except RedisError:
        pass
    if found is None:
        with svc.engine.connect() as conn:
            row = conn.execute(select(Job.__table__).where(by_id(Job, job_id))).mappings().first()
        if row is not None:
            found = row["owner_key_id"], job_view(row)
    if found is None or not may_read(reader, found[0]):
        # The same answer for another key's job as for no job: ids do not leak.
        raise JobNotFound(f"no job with id {str(job_id)!r}", id=str(job_id))
    return found[1]
