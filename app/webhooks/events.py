"""The events a webhook announces (Standard Webhooks' ``type``)."""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    PREDICTION_SUCCEEDED = "prediction.succeeded"
    PREDICTION_FAILED = "prediction.failed"
    PREDICTION_EXPIRED = "prediction.expired"
    BATCH_JOB_FINISHED = "batch_job.finished"
    MODEL_PROMOTED = "model.promoted"
    DRIFT_DETECTED = "drift.detected"


#: Every event's name, in the order the documentation lists them.
EVENTS: tuple[str, ...] = tuple(event.value for event in Event)

#: The event that announces a job ending in each terminal status.
PREDICTION_EVENTS: dict[str, Event] = {
    "succeeded": Event.PREDICTION_SUCCEEDED,
    "failed": Event.PREDICTION_FAILED,
    "expired": Event.PREDICTION_EXPIRED,
}


class DeliveryState(StrEnum):
    """Where an outbox row is (``webhook_deliveries.state``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
