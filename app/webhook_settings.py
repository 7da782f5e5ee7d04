"""The webhook settings (app/webhooks/): fields of :class:`app.config.Settings`, which inherits
them, kept in a module of their own so that app/config.py stays under the module cap. Read from
the environment like every other setting (WEBHOOK_SECRET, ...; README, Configuration).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebhookSettings:
    webhook_secret: str = ""
    """With auth off: the ``whsec_...`` secret that signs every job's callback (empty: callbacks refused)."""

    webhook_allowed_hosts: str = ""
    """Comma-separated host names and IP literals a callback may reach though private or loopback."""

    webhook_max_attempts: int = 13
    """Attempts per webhook delivery before it is marked failed (13 at 20 s doubling: ~23 h apart)."""

    webhook_retry_base_seconds: float = 20.0
    """The first retry's delay; each next one doubles, with ±25% jitter."""

    webhook_timeout_seconds: float = 10.0
    """How long one delivery attempt may take (connect, send, answer)."""

    webhook_max_body_bytes: int = 256 * 1024
    """A delivery's body beyond this carries a link to the job instead of its outputs."""

    webhook_poll_seconds: float = 2.0
    """How often beat has the sender look for due deliveries (retries come due this way)."""

    webhook_retention_seconds: float = 7 * 86400.0
    """Delivered and failed outbox rows older than this are deleted by the sweeper (0 keeps them)."""

    public_url: str = ""
    """The API's URL as its clients reach it, for links in webhook bodies; empty: links are paths."""
