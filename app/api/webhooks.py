"""Webhooks over REST: endpoints per API key, the key's signing secret, deliveries listed and
sent again (app/webhooks/endpoints.py does the work)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from app.access.auth import current_principal, requires_scope
from app.api.blueprint import Blueprint
from app.api.openapi import refusals
from app.services import current_services
from app.webhooks import endpoints
from app.webhooks.events import EVENTS, DeliveryState
from app.webhooks.urls import MAX_URL_LENGTH

blp = Blueprint("webhooks", __name__, url_prefix="/v1", description="Webhooks: events pushed to your URLs")


class WebhookCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_LENGTH),
        metadata={"description": "http(s), no credentials; a private or loopback host is refused."},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS)), required=True, validate=validate.Length(min=1)
    )


class WebhookSchema(Schema):
    id = fields.String(metadata={"format": "uuid"})
    url = fields.String()
    events = fields.List(fields.String(metadata={"enum": list(EVENTS)}))
    created_at = fields.String(metadata={"format": "date-time"})


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "whsec_...: signs every delivery; shown this once."})


class WebhookListSchema(Schema):
    webhooks = fields.List(fields.Nested(WebhookSchema))


class DeliverySchema(Schema):
    id = fields.String(metadata={"description": "The webhook-id header of every attempt (msg_...)."})
    event = fields.String(metadata={"enum": list(EVENTS)})
    subject = fields.String(metadata={"description": "The job's or batch job's id, or the model."})
    state = fields.String(metadata={"enum": [s.value for s in DeliveryState]})
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    delivered_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    created_at = fields.String(metadata={"format": "date-time"})


class DeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(DeliverySchema))


class DeliveryQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class WebhookSecretSchema(Schema):
    secret = fields.String(metadata={"description": "whsec_...: signs this key's callbacks; shown once."})
    created_at = fields.String(metadata={"format": "date-time"})


@blp.route("/webhooks", methods=["POST"])
@blp.arguments(WebhookCreateSchema)
@blp.response(201, WebhookCreatedSchema)
@refusals(blp, {422: "The URL is not http(s), carries credentials, or names a private or loopback address."})
def create_webhook(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Register a URL for events of this API key's jobs and batch jobs (and of models); the
    answer holds the secret that signs them, this once."""
    svc = current_services()
    owner = current_principal()
    created = endpoints.create(
        svc.engine, svc.settings, owner.key_id if owner else None, body["url"], body["events"]
    )
    return created, 201


@blp.route("/webhooks", methods=["GET"])
@blp.response(200, WebhookListSchema)
def list_webhooks() -> dict[str, Any]:
    """This API key's endpoints (an admin key's: every key's), without their secrets."""
    return {"webhooks": endpoints.listed(current_services().engine, current_principal())}


@blp.route("/webhooks/<string:webhook_id>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, schema="Error", description="No such webhook (or another API key's).")
def delete_webhook(webhook_id: str) -> tuple[str, int]:
    """Stop sending to the endpoint; its pending deliveries end failed."""
    endpoints.remove(current_services().engine, webhook_id, current_principal())
    return "", 204


@blp.route("/webhooks/<string:webhook_id>/deliveries", methods=["GET"])
@blp.arguments(DeliveryQuerySchema, location="query", as_kwargs=True)
@blp.response(200, DeliveryListSchema)
@blp.alt_response(404, schema="Error", description="No such webhook (or another API key's).")
def list_deliveries(webhook_id: str, limit: int) -> dict[str, Any]:
    """The endpoint's deliveries, newest first: state, attempts and the last status code."""
    found = endpoints.deliveries(current_services().engine, webhook_id, current_principal(), limit)
    return {"deliveries": found}


@blp.route("/webhooks/<string:webhook_id>/deliveries/<string:delivery_id>/redeliver", methods=["POST"])
@requires_scope("admin")
@blp.response(202, DeliverySchema)
@blp.alt_response(404, schema="Error", description="No such webhook or delivery.")
def redeliver(webhook_id: str, delivery_id: str) -> tuple[dict[str, Any], int]:
    """Send a delivery again, with the same webhook-id and a fresh set of attempts."""
    return endpoints.redeliver(current_services().engine, webhook_id, delivery_id), 202


@blp.route("/webhook-secret", methods=["POST"])
@blp.response(201, WebhookSecretSchema)
@refusals(blp, {409: "Auth is off: callbacks are signed with the server-wide WEBHOOK_SECRET."})
def rotate_webhook_secret() -> tuple[dict[str, Any], int]:
    """Create or replace the secret that signs this API key's callbacks (callback_url); shown this once."""
    owner = current_principal()
    return endpoints.rotate_secret(current_services().engine, owner.key_id if owner else None), 201
