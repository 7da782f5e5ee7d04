"""The webhook sender (Celery queue ``webhooks``): due outbox rows sent, each attempt recorded.

One pass (``deliver_due``) takes due rows (``state`` pending, ``next_attempt_at`` come) with
SELECT ... FOR UPDATE SKIP LOCKED, so senders side by side never take the same row, and
leases them by moving their ``next_attempt_at`` past the time their sends can take: a sender
killed mid-send leaves rows that come due again (sent again, with the same ``webhook-id``:
at least once). Each attempt is signed (app/webhooks/signing.py), sent to the address the
SSRF guard checked (app/webhooks/urls.py), with redirects not followed, then recorded:
``delivered`` on a 2xx, else retried after an exponential, jittered delay kept in the
outbox (never a Celery countdown), and ``failed`` after WEBHOOK_MAX_ATTEMPTS or at once
when no attempt could succeed (the guard refused the host, no secret, the job is gone).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import httpx
import orjson
from sqlalchemy import select, update

from app.db import Job, WebhookDelivery, utcnow
from app.db.ids import by_id
from app.metrics import WEBHOOK_ATTEMPTS
from app.predictions.view import job_view
from app.services import Services
from app.webhooks import signing, urls
from app.webhooks.events import DeliveryState

log = logging.getLogger(__name__)

#: Rows taken (and sent side by side) at a time: one pass's lease covers one timeout each.
SEND_BATCH = 16


class Outcome(NamedTuple):
    """What one attempt came to."""

    status_code: int | None
    error: str | None
    delivered: bool = False
    final: bool = False
    """No later attempt could succeed: the delivery fails now."""


@dataclass
class SendReport:
    """What one pass did; Flower shows it."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "retried": self.retried, "failed": self.failed}


def deliver_due(
    svc: Services,
    *,
    resolver: urls.Resolver = urls.system_resolver,
    transport: httpx.BaseTransport | None = None,
) -> SendReport:
    """Send due deliveries until none is due or MAX_TASK_SECONDS pass.

    ``resolver`` turns host names into addresses (tests pass a stub one to reach names that
    resolve to private addresses without a DNS server).
    """
    settings = svc.settings
    report = SendReport()
    deadline = time.monotonic() + settings.max_task_seconds
    client = httpx.Client(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False, transport=transport
    )
    with client, ThreadPoolExecutor(SEND_BATCH, thread_name_prefix="webhook") as pool:
        while time.monotonic() < deadline:
            rows = claim_due(svc, SEND_BATCH)
            if not rows:
                break
            outcomes = pool.map(lambda row: guarded_attempt(svc, client, row, resolver), rows)
            for row, outcome in zip(rows, outcomes, strict=True):
                record(svc, row, outcome, report)
    return report


def claim_due(svc: Services, limit: int) -> list[Any]:
    """Take up to ``limit`` due rows, leased for as long as one round of sends can take."""
    now = utcnow()
    lease = timedelta(seconds=2 * svc.settings.webhook_timeout_seconds + 5)
    with svc.engine.begin() as conn:
        rows = (
            conn.execute(
                select(WebhookDelivery.__table__)
                .where(WebhookDelivery.state == DeliveryState.PENDING, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .all()
        )
        if rows:
            conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([row["id"] for row in rows]))
                .values(next_attempt_at=now + lease)
            )
    return list(rows)


def guarded_attempt(svc: Services, client: httpx.Client, row: Any, resolver: urls.Resolver) -> Outcome:
    """``attempt``, with anything unexpected recorded as a failed attempt (retried), never a lost pass."""
    try:
        return attempt(svc, client, row, resolver)
    except Exception as exc:
        log.exception("webhook %s: the attempt itself failed", row["id"])
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])


#: What a delivery's ``last_error`` says when the guard refused its host (the sender's log says why).
REFUSED = "refused: the host does not resolve to a public address; nothing was sent"


def attempt(svc: Services, client: httpx.Client, row: Any, resolver: urls.Resolver) -> Outcome:
    """One signed POST of the delivery, or why none was made."""
    settings = svc.settings
    with svc.engine.connect() as conn:
        secret = signing.secret_for(conn, row["endpoint_id"], row["owner_key_id"], settings.webhook_secret)
        body = body_of(svc, conn, row)
    if body is None:
        return Outcome(None, f"{row['subject']} is no longer stored", final=True)
    if secret is None or not signing.valid_secret(secret):
        return Outcome(
            None, "no webhook secret to sign with (POST /v1/webhook-secret, or WEBHOOK_SECRET)", final=True
        )
    try:
        where = urls.target(row["url"], urls.allowed_hosts(settings.webhook_allowed_hosts), resolver)
    except urls.Refused as exc:
        # The reason names what the host resolves to: the log keeps it, the key's delivery list
        # (readable by a predict key) does not, so a callback cannot be used to map internal names.
        log.warning("webhook delivery %s refused: %s", row["id"], exc)
        return Outcome(None, REFUSED, final=True)
    url = httpx.URL(row["url"])
    headers = signing.headers(secret, signing.message_id(row["id"]), utcnow(), body)
    headers |= {"content-type": "application/json", "user-agent": "predq-webhooks"}
    extensions: dict[str, Any] = {}
    if where.address is not None:
        # Connect to the address the guard checked; the name still goes in Host and TLS's SNI.
        headers["host"] = url.netloc.decode("ascii")
        extensions["sni_hostname"] = where.host
        url = url.copy_with(host=where.address)
    try:
        response = client.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Outcome(response.status_code, None, delivered=True)
    redirect = " (redirects are not followed)" if response.is_redirect else ""
    return Outcome(response.status_code, f"answered {response.status_code}{redirect}")


def body_of(svc: Services, conn: Any, row: Any) -> bytes | None:
    """The delivery's body, the same for every attempt: ``{"type", "timestamp", "data"}``, where a
    job's data is its view as GET /v1/predictions/{id} shows it (outputs beyond
    WEBHOOK_MAX_BODY_BYTES replaced by a link); None when the job is no longer stored."""
    data = row["payload"]
    if data is None:
        try:
            job_id = uuid.UUID(row["subject"])
        except ValueError:
            return None
        job = conn.execute(select(Job.__table__).where(by_id(Job, job_id))).mappings().first()
        if job is None:
            return None
        data = job_view(job)
        data.pop("webhook", None)
    envelope = {"type": row["event"], "timestamp": row["created_at"].isoformat(), "data": data}
    body = orjson.dumps(envelope)
    if len(body) > svc.settings.webhook_max_body_bytes and data.get("outputs") is not None:
        link = f"{svc.settings.public_url.rstrip('/')}/v1/predictions/{data['id']}"
        envelope["data"] = data | {"outputs": None, "outputs_url": link}
        body = orjson.dumps(envelope)
    return body


def record(svc: Services, row: Any, outcome: Outcome, report: SendReport) -> None:
    """Write what the attempt came to: delivered, failed, or due again after the backoff."""
    settings = svc.settings
    now = utcnow()
    attempts = row["attempts"] + 1
    values: dict[str, Any] = {"attempts": attempts, "last_status_code": outcome.status_code,
                              "last_error": outcome.error, "last_attempt_at": now}  # fmt: skip
    if outcome.delivered:
        values |= {"state": DeliveryState.DELIVERED, "delivered_at": now}
        report.delivered += 1
    elif outcome.final or attempts >= settings.webhook_max_attempts:
        values["state"] = DeliveryState.FAILED
        report.failed += 1
        log.warning(
            "webhook %s to %s failed after %d attempts: %s", row["id"], row["url"], attempts, outcome.error
        )
    else:
        values["next_attempt_at"] = now + timedelta(
            seconds=backoff(settings.webhook_retry_base_seconds, attempts)
        )
        report.retried += 1
    with svc.engine.begin() as conn:
        conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row["id"], WebhookDelivery.state == DeliveryState.PENDING)
            .values(**values)
        )
    WEBHOOK_ATTEMPTS.labels(row["event"], values.get("state", "retried")).inc()


def backoff(base: float, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts``: base doubling each time, ±25% jitter
    (so receivers that failed together are not all retried at the same instant)."""
    return base * 2 ** (attempts - 1) * random.uniform(0.75, 1.25)
