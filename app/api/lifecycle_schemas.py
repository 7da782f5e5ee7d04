"""Marshmallow schemas of the model lifecycle's routes: feedback and A/B, drift, training runs
and imports, model cards (app/api/schemas.py holds the rest)."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from app.api.schemas import VERSION_RANGE, ModelRefSchema


class FeedbackSchema(Schema):
    class Meta:
        unknown = RAISE

    labels = fields.List(
        fields.Raw(allow_none=True),
        required=True,
        validate=validate.Length(min=1, max=10_000),
        metadata={"description": "One per row of the job, in order; null for rows without feedback."},
    )


class FeedbackRecordedSchema(Schema):
    job_id = fields.String()
    recorded_rows = fields.Integer()
    model = fields.Nested(ModelRefSchema)


class QualitySchema(Schema):
    model = fields.String()
    task = fields.String()
    versions = fields.List(
        fields.Dict(), metadata={"description": "version, n, and accuracy/f1_macro or mae/rmse."}
    )


class AbQuerySchema(Schema):
    a = fields.Integer(required=True, validate=VERSION_RANGE)
    b = fields.Integer(required=True, validate=VERSION_RANGE)


class AbReportSchema(Schema):
    model = fields.String()
    task = fields.String()
    metric = fields.String(metadata={"enum": ["accuracy", "mean_absolute_error"]})
    a = fields.Dict(metadata={"description": "version, n, value, ci95 [low, high]"})
    b = fields.Dict()
    test = fields.Dict(
        allow_none=True, metadata={"description": "name, statistic, p_value; null without enough data"}
    )
    verdict = fields.String()


class TrainingStartedSchema(Schema):
    run_id = fields.String()
    status = fields.String()


class TrainingRunSchema(Schema):
    id = fields.String()
    trigger = fields.String(metadata={"enum": ["manual", "schedule", "drift"]})
    status = fields.String(
        metadata={"enum": ["queued", "running", "promoted", "kept", "skipped", "rejected_data", "failed"]}
    )
    reason = fields.String()
    parent_version = fields.Integer(allow_none=True)
    candidate_version = fields.Integer(allow_none=True)
    rows = fields.Integer()
    metrics = fields.Dict()
    imports = fields.List(
        fields.Integer(), allow_none=True, metadata={"description": "The imports it trained on."}
    )
    quarantined_imports = fields.List(
        fields.Integer(),
        allow_none=True,
        metadata={"description": "The model's quarantined imports, left out of this run."},
    )
    started_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class TrainingRunListSchema(Schema):
    model = fields.String()
    runs = fields.List(fields.Nested(TrainingRunSchema), metadata={"description": "Newest first."})


class TrainingImportSchema(Schema):
    id = fields.Integer()
    source = fields.String()
    rows = fields.Integer(
        metadata={"description": "Rows trained on (those carved into the evaluation set not counted)."}
    )
    status = fields.String(
        metadata={
            "enum": ["accepted", "quarantined"],
            "description": "quarantined: the serving version did not vouch for its labels; not trained on"
            " or carved until an admin accepts it.",
        }
    )
    reason = fields.String(metadata={"description": "Why it was quarantined (empty otherwise)."})
    checks = fields.Dict(
        metadata={
            "description": "Label distribution test, duplicate share, problems found, and the label"
            " check's figures (labels: agreement or correlation, chance, p-values, the model's own figure)."
        }
    )
    created_at = fields.DateTime()
    dropped_at = fields.DateTime(allow_none=True)
    accepted_at = fields.DateTime(
        allow_none=True, metadata={"description": "When an admin accepted it after quarantine."}
    )
    accepted_by = fields.String(allow_none=True)
    evaluation_set = fields.Integer(
        allow_none=True, metadata={"description": "The evaluation set version carved from it, if one was."}
    )


class TrainingImportListSchema(Schema):
    model = fields.String()
    imports = fields.List(fields.Nested(TrainingImportSchema), metadata={"description": "Newest first."})


class DriftFeatureSchema(Schema):
    feature = fields.String()
    ks_statistic = fields.Float()
    ks_pvalue = fields.Float()
    psi = fields.Float()
    drifted = fields.Boolean()


class DriftReportSchema(Schema):
    id = fields.Integer()
    model_version = fields.Integer()
    created_at = fields.DateTime()
    status = fields.String(metadata={"enum": ["ok", "drift", "insufficient_data", "no_reference"]})
    drifted = fields.Boolean()
    drifted_share = fields.Float(allow_none=True)
    reference_rows = fields.Integer()
    window_rows = fields.Integer()
    features = fields.List(fields.Nested(DriftFeatureSchema))


class DriftListSchema(Schema):
    model = fields.String()
    reports = fields.List(fields.Nested(DriftReportSchema), metadata={"description": "Newest first."})


class DriftQuerySchema(Schema):
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))


class CardSchema(Schema):
    model = fields.String()
    version = fields.Integer()
    sections = fields.Dict(
        metadata={
            "description": "The card's sections as data (skops.card's); model.loaded_on: worker processes"
            " holding it."
        }
    )
    markdown = fields.String(metadata={"description": "The whole card as Markdown."})
