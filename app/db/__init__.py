"""Engine creation and the schema's SQLAlchemy 2.0 models, a module per part of the service.

The schema itself is created only by the Alembic migrations in ``migrations/``; these
classes describe it for queries and for ``alembic revision --autogenerate``. Importing
this package imports every table module, so ``Base.metadata`` always holds the whole schema.
"""

from app.db.base import INSERT_BY_DIALECT, Base, dialect_insert, make_engine, newest_rows, utcnow
from app.db.bulk import BulkChunk, BulkJob
from app.db.lifecycle import (
    AliasEvent,
    DriftReport,
    EvaluationSet,
    Feedback,
    TrainingExample,
    TrainingImport,
    TrainingRun,
)
from app.db.serving import (
    PRIORITIES,
    ApiKey,
    Batch,
    IdempotencyKey,
    Job,
    Model,
    ModelAlias,
    ModelVersion,
    ShadowOutput,
)
from app.db.webhooks import WebhookDelivery, WebhookEndpoint, WebhookSecret

__all__ = [
    "INSERT_BY_DIALECT",
    "PRIORITIES",
    "AliasEvent",
    "ApiKey",
    "Base",
    "Batch",
    "BulkChunk",
    "BulkJob",
    "DriftReport",
    "EvaluationSet",
    "Feedback",
    "IdempotencyKey",
    "Job",
    "Model",
    "ModelAlias",
    "ModelVersion",
    "ShadowOutput",
    "TrainingExample",
    "TrainingImport",
    "TrainingRun",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
    "dialect_insert",
    "make_engine",
    "newest_rows",
    "utcnow",
]
