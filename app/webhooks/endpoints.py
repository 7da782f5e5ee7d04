"""The API's side of webhooks: endpoints per API key, the key's signing secret, deliveries
listed and sent again, and what a job's view says of its callback.

An endpoint belongs to the API key that registered it: only that key (or an admin key) lists,
deletes or reads its deliveries; others get the 404 an unknown id gets.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from app.access.auth import may_read
from app.db import WebhookDelivery, WebhookEndpoint, WebhookSecret, dialect_insert, utcnow
from app.errors import WebhookNotFound, WebhookSecretMissing, WebhookSecretServerWide
from app.webhooks import signing, urls
from app.webhooks.events import DeliveryState

if TYPE_CHECKING:
    from app.access.auth import Principal
    from app.config import Settings


def check_callback(engine: Engine, settings: Settings, url: str | None, owner: int | None) -> str | None:
    """A submit's ``callback_url``, checked (422 naming what is wrong), with a secret to sign it
    (None: the submit has none)."""
    if url is None:
        return None
    urls.check_callback_url(url, urls.allowed_hosts(settings.webhook_allowed_hosts))
    if owner is None:
        if not signing.valid_secret(settings.webhook_secret):
            raise WebhookSecretMissing(
                "a callback_url needs WEBHOOK_SECRET (a whsec_... secret) on the server while auth is off",
                fields={"callback_url": ["no WEBHOOK_SECRET to sign it with"]},
            )
        return url
    with engine.connect() as conn:
        found = conn.execute(select(WebhookSecret.owner_key_id).where(WebhookSecret.owner_key_id == owner))
        if found.first() is None:
            raise WebhookSecretMissing(
                "this API key has no webhook secret to sign its callbacks: POST /v1/webhook-secret makes one",
                fields={"callback_url": ["no webhook secret: POST /v1/webhook-secret first"]},
            )
    return url


def rotate_secret(engine: Engine, owner: int | None) -> dict[str, Any]:
    """A new signing secret for ``owner``'s callbacks (replacing any), shown this once."""
    if owner is None:
        raise WebhookSecretServerWide(
            "auth is off: callbacks are signed with the server-wide WEBHOOK_SECRET setting"
        )
    secret, now = signing.new_secret(), utcnow()
    with engine.begin() as conn:
        upsert = dialect_insert(conn)(WebhookSecret).values(owner_key_id=owner, secret=secret, created_at=now)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[WebhookSecret.owner_key_id], set_={"secret": secret, "created_at": now}
            )
        )
    return {"secret": secret, "created_at": now.isoformat()}


def create(
    engine: Engine, settings: Settings, owner: int | None, url: str, events: list[str]
) -> dict[str, Any]:
    """Register an endpoint; its view carries its secret, this once."""
    urls.check_callback_url(url, urls.allowed_hosts(settings.webhook_allowed_hosts), field="url")
    record = {"id": uuid.uuid4(), "owner_key_id": owner, "url": url, "events": sorted(set(events)),
              "secret": signing.new_secret(), "created_at": utcnow()}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(WebhookEndpoint), record)
    return _view(record) | {"secret": record["secret"]}


def listed(engine: Engine, reader: Principal | None) -> list[dict[str, Any]]:
    """The endpoints ``reader`` may see (an admin key: all), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(WebhookEndpoint.__table__).order_by(WebhookEndpoint.created_at)).mappings()
        return [_view(row) for row in rows if may_read(reader, row["owner_key_id"])]


def remove(engine: Engine, endpoint_id: str, reader: Principal | None) -> None:
    """Delete an endpoint; its pending deliveries are dropped (its sent ones stay listed until retention)."""
    found = _owned(engine, endpoint_id, reader)
    with engine.begin() as conn:
        conn.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == found))
        conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == found, WebhookDelivery.state == DeliveryState.PENDING)
            .values(state=DeliveryState.FAILED, last_error="endpoint deleted")
        )


def deliveries(
    engine: Engine, endpoint_id: str, reader: Principal | None, limit: int
) -> list[dict[str, Any]]:
    """An endpoint's deliveries, newest first: state, attempts, last status code."""
    found = _owned(engine, endpoint_id, reader, allow_deleted=True)
    with engine.connect() as conn:
        rows = conn.execute(
            select(WebhookDelivery.__table__)
            .where(WebhookDelivery.endpoint_id == found)
            .order_by(WebhookDelivery.created_at.desc())
            .limit(limit)
        ).mappings()
        return [delivery_view(row) for row in rows]


def redeliver(engine: Engine, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    """Send a delivery again (admin): pending from now, with a fresh set of attempts, same webhook-id."""
    found = _owned(engine, endpoint_id, None, allow_deleted=True)
    parsed = _uuid(delivery_id)
    with engine.begin() as conn:
        changed = conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == parsed, WebhookDelivery.endpoint_id == found)
            .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=utcnow())
        ).rowcount
        if not changed:
            raise WebhookNotFound(f"no delivery {delivery_id!r} of webhook {endpoint_id!r}", id=delivery_id)
        row = (
            conn.execute(select(WebhookDelivery.__table__).where(WebhookDelivery.id == parsed))
            .mappings()
            .one()
        )
    return delivery_view(row)


def job_delivery(conn: Connection, job_id: str) -> dict[str, Any] | None:
    """The state of a job's callback delivery, or None before the job has finished."""
    row = (
        conn.execute(
            select(WebhookDelivery.__table__).where(
                WebhookDelivery.subject == job_id, WebhookDelivery.endpoint_id.is_(None)
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else delivery_view(row)


def delivery_view(row: Any) -> dict[str, Any]:
    return {
        "id": signing.message_id(row["id"]),
        "event": row["event"],
        "subject": row["subject"],
        "state": row["state"],
        "attempts": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["state"] == DeliveryState.PENDING else None,
        "delivered_at": _iso(row["delivered_at"]),
        "created_at": _iso(row["created_at"]),
    }


def _view(row: Any) -> dict[str, Any]:
    return {"id": str(row["id"]), "url": row["url"], "events": list(row["events"]),
            "created_at": _iso(row["created_at"])}  # fmt: skip


def _owned(
    engine: Engine, endpoint_id: str, reader: Principal | None, allow_deleted: bool = False
) -> uuid.UUID:
    """The endpoint's id when ``reader`` may see it; WebhookNotFound otherwise (as for no endpoint).

    ``allow_deleted``: an admin's redelivery or listing of an endpoint already deleted still
    finds its deliveries.
    """
    parsed = _uuid(endpoint_id)
    with engine.connect() as conn:
        owner = conn.execute(select(WebhookEndpoint.owner_key_id).where(WebhookEndpoint.id == parsed)).first()
        if owner is None and allow_deleted:
            owner = conn.execute(
                select(WebhookDelivery.owner_key_id).where(WebhookDelivery.endpoint_id == parsed).limit(1)
            ).first()
    if owner is None or not may_read(reader, owner[0]):
        raise WebhookNotFound(f"no webhook with id {endpoint_id!r}", id=endpoint_id)
    return parsed


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.removeprefix("msg_"))
    except ValueError:
        raise WebhookNotFound(f"no webhook with id {value!r}", id=value) from None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
