"""What ``GET /v1/models`` and ``GET /v1/models/{name}`` say of a model: its aliases, traffic
policy, retraining schedule and versions, each with the backend that serves it."""

from __future__ import annotations

from typing import Any

from app.db import Model
from app.registry import traffic
from app.registry.pools import DEFAULT_POOL


def describe_model(model: Model, serve_compiled: bool) -> dict[str, Any]:
    aliases = {a.alias: a.version for a in model.aliases}
    return {
        "name": model.name,
        "created_at": model.created_at,
        "aliases": aliases,
        "traffic_policy": traffic.parse(model.traffic_policy).as_dict(),
        "retraining": {"every_seconds": model.retrain_every_seconds, "on_drift": model.retrain_on_drift},
        "pool": model.pool or DEFAULT_POOL,
        "versions": [
            {
                "version": v.version,
                "sha256": v.sha256,
                "format": v.format,
                "signature": v.signature,
                "lineage": v.lineage,
                "metrics": v.metrics,
                "aliases": sorted(a for a, ver in aliases.items() if ver == v.version),
                "backend": served_backend(v.compiled, serve_compiled),
                "compiled": v.compiled,
                "created_at": v.created_at,
            }
            for v in model.versions
        ],
    }


def served_backend(compiled: dict[str, Any] | None, serve_compiled: bool) -> str:
    """What answers the version's online batches: onnxruntime when it was compiled, passed its
    gate and INFERENCE_BACKEND allows it (batches past its crossover still go to scikit-learn)."""
    serving = bool(compiled) and compiled.get("status") == "serving"  # type: ignore[union-attr]
    return "onnxruntime" if serving and serve_compiled else "sklearn"
