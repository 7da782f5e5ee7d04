"""Artifact formats: skops (only trusted types load) beside joblib, and ALLOW_PICKLE=false."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from app.errors import RegistryError
from app.registry.registry import Registry
from tests.helpers import expected_outputs

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def clip_outliers(x: np.ndarray) -> np.ndarray:
    """A user's own function: skops cannot know it is harmless, so it is untrusted."""
    return np.clip(x, 0, 10)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def test_a_skops_forest_is_served_like_a_joblib_one(client, svc, worker, iris, tmp_path):
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(*iris)
    path = tmp_path / "forest.skops"
    skops.io.dump(forest, path)

    served = svc.registry.register("skops-forest", path)
    job = client.post("/v1/models/skops-forest/predictions?wait=20", json={"inputs": ROWS}).json

    assert served.format == "skops" and served.artifact_path.endswith("model.skops")
    assert served.trusted_types == ("sklearn.tree._tree.Tree",), "trusted by default, recorded per version"
    assert job["status"] == "succeeded", job
    assert job["outputs"] == expected_outputs(forest, ROWS)
    assert svc.registry.describe("skops-forest")["versions"][0]["format"] == "skops"


def test_a_skops_file_with_an_untrusted_type_is_refused_unless_trusted(app, svc, iris, tmp_path):
    pipeline = make_pipeline(FunctionTransformer(clip_outliers), LogisticRegression(max_iter=500)).fit(*iris)
    path = tmp_path / "custom.skops"
    skops.io.dump(pipeline, path)
    custom = f"{__name__}.clip_outliers"

    with pytest.raises(RegistryError, match="not trusted") as refused:
        svc.registry.register("skops-custom", path)
    assert refused.value.details["untrusted_types"] == [custom]
    assert "skops-custom" not in {m["name"] for m in svc.registry.list_models()}, "nothing stored"

    cli = app.test_cli_runner().invoke(
        args=["models", "register", "--name", "skops-custom", "--file", str(path), "--trust", custom]
    )
    assert cli.exit_code == 0, cli.output
    estimator, served = svc.registry.load("skops-custom", 1)
    assert served.trusted_types == (custom,)
    assert estimator.predict(np.asarray(ROWS)).tolist() == pipeline.predict(np.asarray(ROWS)).tolist()


def test_allow_pickle_false_refuses_joblib_artifacts_to_register_and_to_load(svc, registered, artifacts):
    strict = Registry(svc.engine, svc.settings.artifact_root, allow_pickle=False)

    with pytest.raises(RegistryError, match="ALLOW_PICKLE"):
        strict.register("never-stored", artifacts["iris"])
    with pytest.raises(RegistryError, match="ALLOW_PICKLE"):
        strict.load("iris", 1)
