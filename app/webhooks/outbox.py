"""Writing webhook deliveries: outbox rows, each in the transaction of what it announces.

A row is keyed by event, subject and endpoint (``dedup_key``), and written with ON CONFLICT
DO NOTHING: a result stored twice (a job re-queued and answered again) announces once.
Its ``id`` is the ``webhook-id`` of every attempt. The sender (workers/webhook_sender.py)
takes rows whose ``next_attempt_at`` has come.

Who hears of an event: a job's own ``callback_url`` (signed with its API key's secret), the
endpoints its API key registered for the event (a job's or batch job's events), and for
``model.promoted`` and ``drift.detected`` (models are shared) every endpoint registered for them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from celery import Celery
from sqlalchemy import Connection, Engine, event, select

from app.celery_app import DELIVER_WEBHOOKS
from app.db import INSERT_BY_DIALECT, AliasEvent, ApiKey, WebhookDelivery, WebhookEndpoint, utcnow
from app.webhooks.events import PREDICTION_EVENTS, DeliveryState, Event

log = logging.getLogger(__name__)

# Built once, per dialect (each spells ON CONFLICT with its own insert()).
_WRITE = {
    name: of(WebhookDelivery).on_conflict_do_nothing(index_elements=[WebhookDelivery.dedup_key])
    for name, of in INSERT_BY_DIALECT.items()
}


class JobEnd(NamedTuple):
    """A job that just reached a terminal status, as the outbox needs it."""

    job_id: str
    status: str
    owner: int | None
    callback_url: str | None


class Endpoint(NamedTuple):
    id: uuid.UUID
    owner: int | None
    url: str
    events: frozenset[str]


class EndpointCache:
    """Every registered endpoint, re-read at most every ``seconds``: a worker storing a batch
    learns whose jobs have endpoints without a query per batch (a new endpoint hears of
    jobs finished from then on, within ``seconds``)."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self._engine, self._seconds = engine, seconds
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._endpoints: list[Endpoint] = []

    def subscribed(self, owner: int | None, event: str) -> list[Endpoint]:
        """The endpoints of API key ``owner`` registered for ``event``."""
        endpoints = self._current()
        return [e for e in endpoints if e.owner == owner and event in e.events]

    def _current(self) -> list[Endpoint]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._seconds:
                with self._engine.connect() as conn:
                    self._endpoints = all_endpoints(conn)
                self._read_at = time.monotonic()
            return self._endpoints


def all_endpoints(conn: Connection) -> list[Endpoint]:
    # A revoked key's endpoints hear nothing more (auth off: endpoints have no key, and stay).
    rows = conn.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.owner_key_id, WebhookEndpoint.url, WebhookEndpoint.events)
        .outerjoin(ApiKey, ApiKey.id == WebhookEndpoint.owner_key_id)
        .where(ApiKey.revoked_at.is_(None))
    )
    return [Endpoint(r.id, r.owner_key_id, r.url, frozenset(r.events)) for r in rows]


def delivery(
    event: str,
    subject: str,
    url: str,
    now: datetime,
    *,
    endpoint_id: uuid.UUID | None = None,
    owner: int | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One outbox row, due at once."""
    return {
        "id": uuid.uuid4(),
        "dedup_key": f"{subject}|{endpoint_id.hex if endpoint_id else 'callback'}|{event}",
        "event": event,
        "subject": subject,
        "endpoint_id": endpoint_id,
        "owner_key_id": owner,
        "url": url,
        "payload": payload,
        "state": DeliveryState.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def job_deliveries(
    ends: list[JobEnd], endpoints: EndpointCache | None, now: datetime
) -> list[dict[str, Any]]:
    """The outbox rows announcing these jobs' ends (none for a job nobody listens to)."""
    records = []
    for end in ends:
        event = PREDICTION_EVENTS.get(end.status)
        if event is None:
            continue
        if end.callback_url:
            records.append(delivery(event, end.job_id, end.callback_url, now, owner=end.owner))
        for endpoint in endpoints.subscribed(end.owner, event) if endpoints is not None else ():
            records.append(
                delivery(event, end.job_id, endpoint.url, now, endpoint_id=endpoint.id, owner=end.owner)
            )
    return records


def event_deliveries(
    conn: Connection,
    event: Event,
    subject: str,
    now: datetime,
    *,
    payload: dict[str, Any],
    owner: int | None = None,
    callback_url: str | None = None,
) -> int:
    """Write the rows announcing an event other than a job's end, in ``conn``'s transaction;
    returns how many. A batch job's event goes to its callback and its key's endpoints; a
    model's to every endpoint registered for it."""
    shared = event in (Event.MODEL_PROMOTED, Event.DRIFT_DETECTED)
    records = (
        [delivery(event, subject, callback_url, now, owner=owner, payload=payload)] if callback_url else []
    )
    records += [
        delivery(event, subject, e.url, now, endpoint_id=e.id, owner=e.owner, payload=payload)
        for e in all_endpoints(conn)
        if event in e.events and (shared or e.owner == owner)
    ]
    write(conn, records)
    return len(records)


def drift_payload(report: dict[str, Any]) -> dict[str, Any]:
    """What ``drift.detected`` carries: the report as GET /v1/models/{name}/drift lists it, in short."""
    drifted = [f["feature"] for f in report["features"] if f["drifted"]]
    model = {"name": report["model_name"], "version": report["model_version"]}
    return {"model": model, "report_id": report["id"], "drifted_share": report["drifted_share"],
            "window_rows": report["window_rows"], "drifted_features": drifted,
            "created_at": report["created_at"].isoformat()}  # fmt: skip


def batch_job_payload(job: Any, status: str, error: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """What ``batch_job.finished`` carries: the batch job's end (GET /v1/batch-jobs/{id} has the rest)."""
    model = {"name": job.model_name, "version": job.model_version}
    return {"id": str(job.id), "status": status, "model": model, "rows_total": job.rows_total, "error": error,
            "completed_at": now.isoformat(), "url": f"/v1/batch-jobs/{job.id}"}  # fmt: skip


def announce_alias_moves() -> None:
    """Write ``model.promoted`` rows with every alias move (an ``alias_events`` insert), in its
    transaction: the registry knows nothing of webhooks, and none of its moves goes unannounced.
    Idempotent (each app factory calls it)."""
    if not event.contains(AliasEvent, "after_insert", _announce_alias_move):
        event.listen(AliasEvent, "after_insert", _announce_alias_move)


def _announce_alias_move(_mapper: Any, conn: Connection, moved: AliasEvent) -> None:
    model = {"name": moved.model_name, "version": moved.to_version}
    payload = {"model": model, "alias": moved.alias, "from_version": moved.from_version,
               "to_version": moved.to_version, "actor": moved.actor, "reason": moved.reason}  # fmt: skip
    subject = f"alias:{moved.id}"
    event_deliveries(conn, Event.MODEL_PROMOTED, subject, moved.at or utcnow(), payload=payload)


def write(conn: Connection, records: list[dict[str, Any]]) -> None:
    """Insert outbox rows not written yet, in ``dedup_key`` order (two writers never deadlock)."""
    if records:
        conn.execute(_WRITE[conn.dialect.name], sorted(records, key=lambda r: r["dedup_key"]))


def wake_sender(celery: Celery) -> None:
    """Have the sender look for due deliveries now (beat also does every WEBHOOK_POLL_SECONDS).

    Best effort: a message lost is a delivery sent at beat's next poll instead.
    """
    try:
        celery.send_task(DELIVER_WEBHOOKS)
    except Exception as exc:  # the broker unreachable: the rows wait in the outbox
        log.warning("could not wake the webhook sender: %s", exc)
