"""Where artifacts and batch files live (a local directory or an S3 bucket): store.py; a
worker's disk cache of artifacts by sha256: artifacts.py; botocore's part: credentials.py."""

from __future__ import annotations

from typing import Any

from app.storage.artifacts import Artifacts
from app.storage.store import ObjectStore, S3Options, retried

__all__ = ["Artifacts", "ObjectStore", "S3Options", "artifact_store", "batch_store", "retried"]


def _s3(settings: Any) -> S3Options:
    return S3Options(settings.s3_endpoint_url, settings.s3_region, settings.s3_public_endpoint)


def artifact_store(settings: Any) -> Artifacts:
    """ARTIFACT_ROOT, with MODEL_CACHE_DIR in front of it when it is remote."""
    return Artifacts(
        ObjectStore(settings.artifact_root, _s3(settings)),
        settings.model_cache_dir,
        settings.model_cache_dir_bytes,
        settings.store_retry_seconds,
    )


def batch_store(settings: Any) -> ObjectStore:
    """BATCH_ROOT: inputs, parts and results of batch jobs."""
    return ObjectStore(settings.batch_root, _s3(settings))
