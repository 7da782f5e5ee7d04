"""Marshmallow schemas: they validate request envelopes and generate /openapi.json.

The submit and poll routes' inputs are msgspec types instead (app/api/decoding.py): they
carry nearly all traffic, and msgspec decodes them in compiled code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.predictions.steering import MAX_DEADLINE_MS

#: Versions are stored as 32-bit integers.
VERSION_RANGE = validate.Range(min=1, max=2**31 - 1)
#: PostgreSQL's text cannot hold a NUL character: stored free text refuses one (422), and the
#: document says so (the validator's pattern).
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="must not contain a NUL character")


class StrictFloat(fields.Float):
    """A JSON number, never text: marshmallow's Float also reads "1.5", which the document's
    ``number`` does not allow."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._validated(value)


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"example": "invalid_input"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "unavailable"]})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"description": 'database, redis, worker (store, for s3:// roots): "ok" or what is wrong.'},
    )
    pools = fields.Dict(
        keys=fields.String(),
        values=fields.String(metadata={"enum": ["ok", "no worker"]}),
        metadata={
            "description": 'Each worker pool (POOLS, and any a model is in): "ok", or "no worker": its'
            " models' jobs wait until one starts (not a reason for 503). Empty when Redis or the database"
            " is down."
        },
    )
    down = fields.List(fields.String(), metadata={"description": "The checks that failed (503 only)."})


class ModelRefSchema(Schema):
    name = fields.String()
    version = fields.Integer()


class OutputSchema(Schema):
    prediction = fields.Raw(metadata={"description": "Class label or number."})
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float())


class JobWebhookSchema(Schema):
    url = fields.String()
    state = fields.String(
        metadata={
            "enum": ["waiting", "pending", "delivered", "failed"],
            "description": "waiting: the job has not finished; pending: being sent (retried on failure).",
        }
    )
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)


class JobSchema(Schema):
    id = fields.String()
    status = fields.String(
        metadata={
            "enum": ["queued", "running", "succeeded", "failed", "expired", "cancelled"],
            "description": "More statuses may come: read done, not this list. expired (not started"
            " before its deadline) and cancelled jobs were never run, and carry an error with their code.",
        }
    )
    done = fields.Boolean(
        metadata={"description": "True once the job has its answer and never changes again."}
    )
    model = fields.Nested(ModelRefSchema)
    outputs = fields.List(fields.Nested(OutputSchema), allow_none=True)
    error = fields.Nested(ErrorDetailSchema, allow_none=True)
    priority = fields.String(metadata={"enum": ["high", "normal", "low"]})
    deadline = fields.String(
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "Not started by then, the job ends expired; null: none.",
        },
    )
    created_at = fields.String(metadata={"format": "date-time"})
    completed_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    webhook = fields.Nested(
        JobWebhookSchema, allow_none=True, metadata={"description": "The callback_url's delivery, or null."}
    )


class VersionSchema(Schema):
    version = fields.Integer()
    sha256 = fields.String()
    format = fields.String(metadata={"enum": ["joblib", "skops"]})
    lineage = fields.Dict(
        allow_none=True, metadata={"description": "Retrained versions: parent, run, rows, parameters."}
    )
    signature = fields.Dict()
    metrics = fields.Dict()
    aliases = fields.List(fields.String())
    backend = fields.String(
        metadata={
            "enum": ["sklearn", "onnxruntime"],
            "description": "What answers online batches: onnxruntime only for a version compiled,"
            " its parity gate passed, up to its crossover batch size (INFERENCE_BACKEND allowing).",
        }
    )
    compiled = fields.Dict(
        allow_none=True,
        metadata={
            "description": "The compile record: status (serving, refused, unsupported, not_faster, off),"
            " reason, tolerance, max_abs_diff, rows_checked, crossover_rows, timings_ms, sha256."
        },
    )
    created_at = fields.DateTime()
    loaded_on = fields.Integer(
        allow_none=True,
        metadata={
            "description": "GET /v1/models/{name} only: worker processes holding this version loaded now"
            " (each reports every WARM_INTERVAL_SECONDS); null when Redis does not answer."
        },
    )


class ModelSchema(Schema):
    name = fields.String()
    created_at = fields.DateTime()
    aliases = fields.Dict(keys=fields.String(), values=fields.Integer())
    traffic_policy = fields.Dict()
    retraining = fields.Dict(metadata={"description": "every_seconds (null: not scheduled), on_drift."})
    pool = fields.String(
        metadata={
            "description": "The worker pool whose Celery queue (inference.<pool>) its online rows wake;"
            " default: the queue inference."
        }
    )
    versions = fields.List(fields.Nested(VersionSchema))


class PoolUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    pool = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "A pool the POOLS setting lists, or default (no pool of its own)."},
    )


class DeadlineDefaultSchema(Schema):
    class Meta:
        unknown = RAISE

    default_deadline_ms = fields.Integer(
        required=True,
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_DEADLINE_MS),
        metadata={
            "description": "Milliseconds a job of this model may wait to start when its submit names no"
            " deadline_ms; null: none (QUEUE_TTL_SECONDS applies)."
        },
    )


class DeadlineDefaultViewSchema(DeadlineDefaultSchema):
    model = fields.String()


class AliasUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    version = fields.Integer(required=True, strict=True, validate=VERSION_RANGE)
    reason = fields.String(
        validate=[validate.Length(max=1000), NO_NUL], metadata={"description": "For the audit trail."}
    )


class ExactlyOneOfSchema(Schema):
    """An object that gives exactly one of ``EXACTLY_ONE_OF``'s fields: checked here, and
    written into /openapi.json as ``oneOf`` from the same tuple (app/api/openapi.py)."""

    EXACTLY_ONE_OF: ClassVar[tuple[str, ...]] = ()

    class Meta:
        unknown = RAISE

    @validates_schema
    def _exactly_one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if sum(name in data for name in self.EXACTLY_ONE_OF) != 1:
            raise ValidationError(f"give exactly one of {' or '.join(self.EXACTLY_ONE_OF)}")


class RouteSchema(ExactlyOneOfSchema):
    EXACTLY_ONE_OF = ("alias", "version")

    alias = fields.String(validate=validate.Length(min=1, max=100))
    version = fields.Integer(strict=True, validate=VERSION_RANGE)
    weight = StrictFloat(validate=validate.Range(min=0, min_inclusive=False, max=1_000_000))


class ShadowTargetSchema(ExactlyOneOfSchema):
    EXACTLY_ONE_OF = ("alias", "version")

    alias = fields.String(validate=validate.Length(min=1, max=100))
    version = fields.Integer(strict=True, validate=VERSION_RANGE)


class TrafficPolicySchema(Schema):
    class Meta:
        unknown = RAISE

    routes = fields.List(fields.Nested(RouteSchema), required=True, validate=validate.Length(min=1, max=20))
    shadow = fields.Nested(ShadowTargetSchema, allow_none=True)


class ShadowComparisonSchema(Schema):
    model = fields.String()
    rows_compared = fields.Integer()
    prediction_agreement = fields.Float(allow_none=True)
    jobs = fields.List(fields.Dict(), metadata={"description": "Newest first: served and shadow outputs."})


class ReasonSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = fields.String(
        validate=[validate.Length(max=1000), NO_NUL], metadata={"description": "For the audit trail."}
    )


class AliasEventSchema(Schema):
    alias = fields.String()
    from_version = fields.Integer(allow_none=True)
    to_version = fields.Integer()
    actor = fields.String()
    reason = fields.String()
    at = fields.DateTime()


class AliasEventListSchema(Schema):
    model = fields.String()
    events = fields.List(fields.Nested(AliasEventSchema), metadata={"description": "Newest first."})


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
