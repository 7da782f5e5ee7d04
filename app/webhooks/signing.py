"""Webhook secrets and signatures, as the Standard Webhooks specification has them.

A secret is ``whsec_`` and 32 random bytes in base64. Each attempt is signed with the
``standardwebhooks`` package: ``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256 of
``<webhook-id>.<webhook-timestamp>.<body>``; a receiver checks it with the same package
(``Webhook(secret).verify(body, headers)``).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from sqlalchemy import Connection, select
from standardwebhooks import Webhook

from app.db import WebhookEndpoint, WebhookSecret

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret in Standard Webhooks' form."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def valid_secret(secret: str) -> bool:
    """Whether ``secret`` is a usable ``whsec_`` secret (WEBHOOK_SECRET is checked so)."""
    if not secret.startswith(PREFIX):
        return False
    try:
        Webhook(secret)
    except Exception:
        return False
    return True


def message_id(delivery_id: object) -> str:
    """The ``webhook-id`` of a delivery: the same for every attempt, so receivers drop repeats."""
    return f"msg_{getattr(delivery_id, 'hex', delivery_id)}"


def headers(secret: str, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
    }


def secret_for(
    conn: Connection, endpoint_id: object | None, owner: int | None, server_wide: str
) -> str | None:
    """The secret that signs a delivery: its endpoint's; for a job's callback, its API key's
    (``POST /v1/webhook-secret``), or with no key (auth off) the server-wide WEBHOOK_SECRET."""
    if endpoint_id is not None:
        found = conn.execute(select(WebhookEndpoint.secret).where(WebhookEndpoint.id == endpoint_id))
        return found.scalar_one_or_none()
    if owner is None:
        return server_wide or None
    return conn.execute(
        select(WebhookSecret.secret).where(WebhookSecret.owner_key_id == owner)
    ).scalar_one_or_none()
