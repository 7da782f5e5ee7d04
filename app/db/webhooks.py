"""The tables of webhooks: endpoints an API key registered, signing secrets per API key, and
the outbox of deliveries (app/webhooks/, workers/webhook_sender.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class WebhookEndpoint(Base):
    """A URL an API key registered for some events; its secret signs what is sent there."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """The API key that registered it (None with auth off): it gets that key's jobs' events."""
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    """``whsec_<base64>``: shown once, at creation; kept to sign each delivery."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSecret(Base):
    """The secret that signs the callbacks of an API key's jobs (``POST /v1/webhook-secret``)."""

    __tablename__ = "webhook_secrets"

    owner_key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one URL: the outbox row, written with what it announces, sent at least once.

    ``id`` is the ``webhook-id`` of every attempt (``msg_<hex>``), so a receiver drops repeats.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    """One delivery per event, subject and URL: a result stored twice writes one row."""
    event: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    """What the event is about: a job's or batch job's id, a model's name."""
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True, index=True)
    """The registered endpoint; None for a job's own ``callback_url``."""
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The event's data when it is not a job's view (built when sent, from its row)."""
    state: Mapped[str] = mapped_column(String(16), index=True)
    """pending, delivered or failed."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    """When the sender takes it next (also the lease of a sender that took it and died)."""
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    """Retention reads it (workers/retention.py): a delivered or failed row goes once this is past it."""
