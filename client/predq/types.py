"""The shapes of the server's answers, for type checkers and editors (they are plain dicts)."""

from __future__ import annotations

from typing import Any, TypedDict


class ModelRef(TypedDict):
    name: str
    version: int


class Output(TypedDict, total=False):
    prediction: Any
    probabilities: dict[str, float]  # classifiers with predict_proba only
    explanation: dict[str, Any]  # asked for with explain: base_value, contributions (by_class with "all")


class ErrorBody(TypedDict):
    code: str
    message: str
    details: dict[str, Any]


class JobWebhook(TypedDict):
    url: str
    state: str  # waiting (the job runs), pending, delivered, failed
    attempts: int
    last_status_code: int | None


class JobView(TypedDict, total=False):
    id: str
    status: str  # queued, running, succeeded, failed, expired, cancelled; more may come: read done
    done: bool  # the job has its answer and never changes again (servers before it: absent)
    model: ModelRef
    outputs: list[Output] | None
    error: ErrorBody | None  # failed, expired (deadline_exceeded) and cancelled jobs say why
    priority: str  # high, normal, low
    deadline: str | None
    created_at: str
    completed_at: str | None
    webhook: JobWebhook | None  # the callback_url's delivery (servers before it: absent)


class Version(TypedDict):
    version: int
    sha256: str
    format: str  # joblib or skops
    lineage: dict[str, Any] | None
    signature: dict[str, Any]
    metrics: dict[str, Any]
    aliases: list[str]
    created_at: str


class Model(TypedDict):
    name: str
    created_at: str
    aliases: dict[str, int]
    traffic_policy: dict[str, Any]
    retraining: dict[str, Any]
    pool: str  # the worker pool serving its online rows ("default": the shared queue)
    versions: list[Version]


class FeedbackRecorded(TypedDict):
    job_id: str
    recorded_rows: int
    model: ModelRef


class Quality(TypedDict):
    model: str
    task: str
    versions: list[dict[str, Any]]  # version, n, and accuracy/f1_macro or mae/rmse


class DriftReport(TypedDict):
    id: int
    model_version: int
    created_at: str
    status: str  # ok, drift, insufficient_data, no_reference
    drifted: bool
    drifted_share: float | None
    reference_rows: int
    window_rows: int
    features: list[dict[str, Any]]


class BatchJob(TypedDict):
    id: str
    status: str  # queued, running, succeeded, partial, failed, cancelled
    model: ModelRef
    source: str
    id_column: str | None
    rows: dict[str, int]  # total, done
    chunks: dict[str, int]  # total, chunk_rows, and a count per chunk status
    rows_per_second: float | None
    eta_seconds: float | None
    failed_chunks: list[dict[str, Any]]
    result: dict[str, Any] | None  # url, format, path
    error: ErrorBody | None
    created_at: str
    started_at: str | None
    completed_at: str | None
