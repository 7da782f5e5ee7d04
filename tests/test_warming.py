"""Warm pool processes (workers/warming.py): the versions aliases point at are loaded before
the first batch or chunk needs them, and a promoted version at the next look; a bulk worker's
also runs a chunk's file work once."""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from pathlib import Path

import joblib
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from app.registry.registry import Registry
from workers import bulk_files, warming


def _register(svc, tmp_path: Path, model) -> tuple[str, int]:
    name = f"warm-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.joblib"
    joblib.dump(model, path)
    return name, svc.registry.register(name, path).version


def test_a_pool_process_warms_the_serving_versions_and_a_promoted_one(svc, tmp_path):
    """workers/warming.py: what aliases point at is loaded before any batch asks, and a
    version promoted later is loaded at the next look (a fresh registry is a fresh process)."""
    X, y = make_classification(n_samples=300, n_features=4, random_state=0)
    model = LogisticRegression().fit(X, y)
    name, first = _register(svc, tmp_path, model)
    # A fresh registry is a fresh pool process; with no alias cache, a promotion shows at once.
    fresh = dataclasses.replace(
        svc, registry=Registry(svc.engine, svc.settings.artifact_root, cache_seconds=0)
    )

    assert (name, first) in warming.warm(fresh)
    assert (name, first) in fresh.registry.loaded_versions()
    second = _register_again(svc, tmp_path, name, model)
    assert (name, second) not in warming.warm(fresh), "a version no alias points at is not loaded"
    svc.registry.set_alias(name, "champion", second)

    assert warming.warm(fresh) == [(name, second)], "the promoted version, and only it, is loaded"


def _register_again(svc, tmp_path: Path, name: str, model) -> int:
    path = tmp_path / f"{name}-again.joblib"
    joblib.dump(model, path)
    return svc.registry.register(name, path).version


def test_a_bulk_process_warms_the_file_path_and_leaves_no_file_behind(monkeypatch, tmp_path):
    """workers/bulk_files.py ``warm_up``: a chunk's file work (a file read, checked and rewritten,
    the chunk read back, a part written in both formats) runs before the first chunk, in memory
    and a temporary directory it removes: nothing is left where files are kept."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    bulk_files.warm_up()

    assert list(tmp_path.iterdir()) == [], "the warm-up's temporary files are removed"
