"""Configuration, read from the environment in one place.

Every tunable lives on :class:`Settings` (webhooks' and retention's on its bases,
app/webhook_settings.py and app/retention_settings.py), each with a one-line docstring; none is
read at import: the app factory calls ``Settings.from_env()``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.environment import parsed
from app.retention_settings import RetentionSettings
from app.webhook_settings import WebhookSettings

#: Where local state lives unless VAR_DIR says otherwise.
DEFAULT_VAR_DIR = Path(__file__).resolve().parent.parent / "var"


@dataclass(frozen=True)
class Settings(WebhookSettings, RetentionSettings):
    var_dir: str = str(DEFAULT_VAR_DIR)
    """Local state: the embedded SQLite database, artifacts, beat's schedule file."""

    database_url: str = ""
    """SQLAlchemy URL of the job and registry database; empty means SQLite in var_dir."""

    db_pool_size: int = 32
    """Database connections each process keeps open (match the API's threads per process)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for the row queues, the output cache and the result hand-off."""

    cache_redis_url: str = ""
    """A Redis of its own for the output cache and finished jobs' views (evictable); empty: ``redis_url``."""

    broker_url: str | None = None
    """Celery broker; defaults to ``redis_url``."""

    artifact_root: str = ""
    """Where registered artifacts are stored: a directory or s3://bucket/prefix; empty: var_dir/artifacts."""

    batch_root: str = ""
    """Batch jobs' inputs, parts and results: a directory or s3://bucket/prefix; empty: var_dir/batches."""

    s3_endpoint_url: str = ""
    """The S3-compatible endpoint of s3:// roots (MinIO, Ceph: http://host:9000); empty means AWS."""

    s3_region: str = "us-east-1"
    """The region s3:// roots are signed for."""

    s3_public_endpoint: str = ""
    """The endpoint clients reach, when not S3_ENDPOINT_URL: presigned result URLs are signed for it."""

    model_cache_dir: str = ""
    """Where a worker host keeps artifacts fetched from an s3:// ARTIFACT_ROOT; empty: var_dir/model-cache."""

    model_cache_dir_bytes: int = 10 * 1024 * 1024 * 1024
    """Most bytes MODEL_CACHE_DIR holds; the least recently used artifacts are deleted first."""

    store_retry_seconds: float = 60.0
    """How long a worker waits for an unavailable store before its jobs fail (store_unavailable)."""

    batch_presigned_results: bool = False
    """A batch job's result on S3 is answered with a redirect to a presigned URL instead of streamed."""

    batch_presigned_seconds: int = 3600
    """How long a presigned result URL stays valid."""

    batch_input_root: str = ""
    """Server-side files a batch job may read (its ``path``) lie under this; empty allows none."""

    batch_chunk_rows: int = 50_000
    """Rows per chunk of a batch job: one bulk task, one part file, a worker's memory bound."""

    batch_max_bytes: int = 2 * 1024 * 1024 * 1024
    """Largest file a batch job accepts (more gets 413)."""

    bulk_worker_nice: int = 10
    """How much lower a bulk worker's CPU priority is (nice), so online batches go first."""

    bulk_chunk_timeout_seconds: float = 600.0
    """A chunk running this long is sent again (its worker died); a job unsealed this long, deleted."""

    max_batch_rows: int = 1024
    """Most rows a worker feeds to one model call."""

    max_batch_delay: float = 0.005
    """Seconds a worker waits for more rows when its first pop was not a full batch."""

    inference_backend: str = "auto"
    """``auto``: a version compiled by an admin (its parity gate passed) serves with onnxruntime up
    to its crossover batch size; ``sklearn``: every version serves with scikit-learn alone."""

    compile_on_register: bool = False
    """Compile every version as it is registered or retrained (the gate decides whether it serves)."""

    compile_tolerance: float = 1e-6
    """The parity gate's bound on a compiled version's probabilities (and values, relative)."""

    warm_interval_seconds: float = 5.0
    """How often each worker pool process loads the versions in service and reports them; 0: on demand."""

    model_cache_bytes: int = 2 * 1024**3
    """Per process: bytes of loaded versions kept (artifact + ONNX sizes), least recent out; 0: no bound."""

    model_cache_max: int = 32
    """Per process: most loaded versions kept (and explainers, card importances); 0: no bound."""

    pools: str = ""
    """Comma-separated worker pools a model may be put in (its rows then wake queue inference.POOL)."""

    max_task_seconds: float = 5.0
    """How long one batch task keeps running batches before it hands on to a fresh task."""

    queue_linger_seconds: float = 0.05
    """Seconds a worker that emptied a queue waits for more rows before it lets go of it."""

    max_rows_per_request: int = 1000
    """Rows one prediction request may carry (more gets 413)."""

    explain_max_rows: int = 100
    """Rows one request asking for explanations may carry (more gets 413), and most rows in
    one batch of explained rows: shap on a deep forest takes ~70 ms a row."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted (more gets 413)."""

    max_wait_seconds: float = 30.0
    """Upper bound for ``?wait=S`` long-polls."""

    v2_wait_seconds: float = 30.0
    """How long a /v2 infer waits for its job before answering 503 (the job goes on; read it on /v1)."""

    cache_ttl_seconds: int = 24 * 3600
    """How long a cached row output lives in Redis; 0 turns the cache off."""

    result_ttl_seconds: int = 3600
    """How long a finished job's JSON stays in Redis for fast polling."""

    registry_cache_seconds: float = 2.0
    """How long an API process trusts its copy of a model's alias/version lookup."""

    stuck_job_seconds: float = 120.0
    """A job queued or running longer than this, its row on no queue, is put back on one by the sweeper."""

    sweep_interval_seconds: float = 30.0
    """How often beat runs the sweeper."""

    allow_pickle: bool = True
    """Register and load joblib (pickle) artifacts; false allows only skops artifacts."""

    # scikit-learn's own tree structure, rebuilt from plain arrays; skops lists it as
    # untrusted, which would refuse every forest and tree model by default.
    skops_trusted_types: str = "sklearn.tree._tree.Tree"
    """Comma-separated types every skops artifact may hold beyond skops' defaults."""

    log_format: str = "json"
    """``json`` (one object per line, for machines) or ``text`` (for people)."""

    log_level: str = "INFO"
    """Least severe level logged."""

    log_requests: bool = True
    """Log one line per API request (method, path, status, time, request and job ids)."""

    worker_metrics_bind: str = "127.0.0.1:9540"
    """Where a Celery worker serves its Prometheus metrics (host:port); empty turns it off."""

    drift_interval_seconds: float = 3600.0
    """How often beat checks every model for data drift."""

    drift_window_seconds: float = 24 * 3600.0
    """Drift checks compare inputs of jobs stored within this many seconds."""

    drift_window_rows: int = 5000
    """At most this many of the newest rows make the window."""

    drift_min_rows: int = 200
    """Fewer rows in the window than this: the report says insufficient_data."""

    drift_reference_rows: int = 2000
    """Rows of training data kept per version as the drift baseline."""

    drift_p_value: float = 0.05
    """A feature drifts when its two-sample KS test gives p below this ..."""

    drift_psi: float = 0.2
    """... or its population stability index is above this."""

    drift_share: float = 0.5
    """The window drifts when at least this share of the features drift."""

    training_window_rows: int = 10000
    """A retrain fits on at most this many of the newest training examples."""

    training_min_rows: int = 50
    """Fewer training examples than this: the run is skipped."""

    training_holdout: float = 0.25
    """Share of the examples held out to score candidate and champion on the same rows."""

    training_margin: float = 0.01
    """Promote when the candidate's accuracy is this much higher (regressors: RMSE this share lower)."""

    training_alpha: float = 0.05
    """Promote only when a paired test of candidate against champion rejects at this level ..."""

    training_eval_share: float = 0.2
    """... on the model's evaluation set; without one, this share of its first import becomes it."""

    import_label_alpha: float = 1e-6
    """An import whose labels the serving version matches no better than chance, or far worse than
    its own figure, by a one-sided test at this level, is quarantined until an admin accepts it."""

    training_lock_seconds: float = 3600.0
    """Longest a training run may hold its model's lock (a crashed run frees it after this)."""

    ab_min_samples: int = 30
    """An A/B report needs this many labeled rows per version before it runs a test."""

    auth_enabled: bool = True
    """Require an API key (``Authorization: Bearer``) on every /v1 endpoint."""

    auth_cache_seconds: float = 5.0
    """How often an API process re-reads its set of active keys: a new or revoked key acts within this."""

    rate_limit: str = "100/second"
    """Requests per API key (per client address when auth is off), unless the key sets its own."""

    auth_failure_limit: str = "20/minute"
    """Refused keys (bearer or console sign-in) one address may present before 429 (valid keys never)."""

    trusted_proxies: int = 0
    """Proxies in front of the API whose X-Forwarded-For names the client; 0 ignores the header."""

    secret_key: str = ""
    """Signs the console's session cookies and CSRF tokens; the same in every API process."""

    console_session_seconds: int = 8 * 3600
    """How long a console sign-in lasts from the sign-in (use does not extend it); then sign in again."""

    worker_silent_seconds: float = 30.0
    """The console marks a worker whose heartbeat (every few seconds) is older than this as silent."""

    max_queued_jobs: int = 10000
    """Jobs waiting on one model version's queues (all priorities together) beyond which a submit gets 503."""

    queue_ttl_seconds: float = 0.0
    """A job not started this long after its submit expires (unless it or its model sets one); 0: none."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else handed to Flask's config (tests use it for TESTING)."""

    def __post_init__(self) -> None:
        # Frozen dataclass: fill the defaults that depend on var_dir once, here.
        var = Path(self.var_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{var / 'predq.sqlite3'}")
        if not self.artifact_root:
            object.__setattr__(self, "artifact_root", str(var / "artifacts"))
        if not self.batch_root:
            object.__setattr__(self, "batch_root", str(var / "batches"))
        if not self.model_cache_dir:
            object.__setattr__(self, "model_cache_dir", str(var / "model-cache"))
        if self.inference_backend not in ("auto", "sklearn"):
            raise ValueError(f"INFERENCE_BACKEND={self.inference_backend!r}: auto or sklearn")

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``PREDQ``-style environment variables (see README)."""
        return cls(**parsed(cls, os.environ if environ is None else environ))

    def replace(self, **changes: Any) -> Settings:
        if "var_dir" in changes:
            # Paths derived from the old var_dir follow the new one, unless given too.
            old = Settings(var_dir=self.var_dir)
            for derived in ("database_url", "artifact_root", "batch_root", "model_cache_dir"):
                if derived not in changes and getattr(self, derived) == getattr(old, derived):
                    changes[derived] = ""
        return dataclasses.replace(self, **changes)
