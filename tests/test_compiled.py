"""Compiled inference (issue 33): a version serves with onnxruntime only after a parity gate
against its scikit-learn original, within the tolerance it recorded; anything else keeps
scikit-learn, and says why. In process, through the registry and the workers' own steps;
one end-to-end test goes through a real worker."""

from __future__ import annotations

import uuid
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from app.errors import ArtifactIntegrityError
from app.lifecycle.compiling import compile_version, turn_off
from app.scoring import compiled
from app.scoring.inference import predict_arrays, predict_by_job
from tests.helpers import bearer

TOLERANCE = 1e-6


def _data(n: int = 1500, features: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=n, n_features=features, n_informative=5, random_state=seed)


def _register(svc, tmp_path: Path, model, X: np.ndarray) -> tuple[str, int]:
    name = f"compiled-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.joblib"
    joblib.dump(model, path)
    served = svc.registry.register(name, path, reference=X[:500])
    return name, served.version


@pytest.fixture(scope="module")
def forest() -> tuple[RandomForestClassifier, np.ndarray]:
    X, y = _data()
    return RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y), X


def test_a_forest_whose_conversion_is_exact_serves_with_onnxruntime_within_tolerance(svc, tmp_path, forest):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)

    record = compile_version(svc, name, version)

    assert record["status"] == "serving", record.get("reason")
    assert record["max_abs_diff"] <= TOLERANCE and record["rows_checked"] >= 4000
    assert record["crossover_rows"] >= 1, "onnxruntime beats scikit-learn on small batches of a forest"
    loaded = svc.registry.loaded(name, version)
    assert isinstance(loaded.compiled, compiled.CompiledModel), "the worker's copy holds the session"
    root = Path(svc.settings.artifact_root)
    sizes = (
        (root / loaded.served.artifact_path).stat().st_size,
        (root / record["artifact_path"]).stat().st_size,
    )
    assert (loaded.artifact_bytes, loaded.onnx_bytes) == sizes, "the memory budget counts both artifacts"
    rows = np.random.default_rng(7).normal(0, 2, size=(50_000, X.shape[1]))
    expected, expected_proba = predict_arrays(model, loaded.served.signature, rows)
    got, got_proba = loaded.compiled.predict_arrays(model, loaded.served.signature, rows)
    assert (got == expected).all(), "every prediction equal on 50,000 random rows"
    assert np.abs(got_proba - expected_proba).max() <= TOLERANCE
    batch = rows[: min(10, record["crossover_rows"])]
    signature = loaded.served.signature
    outputs = predict_by_job(loaded.estimator, signature, batch, [len(batch)], loaded.compiled)[0]
    sklearn_outputs = predict_by_job(model, signature, batch, [len(batch)])[0]
    assert [o["prediction"] for o in outputs] == [o["prediction"] for o in sklearn_outputs]
    described = next(v for v in svc.registry.describe(name)["versions"] if v["version"] == version)
    assert described["backend"] == "onnxruntime" and described["compiled"]["sha256"] == record["sha256"]


def test_a_batch_past_the_crossover_keeps_the_scikit_learn_answer_bit_for_bit(svc, tmp_path, forest):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    compile_version(svc, name, version)
    loaded = svc.registry.loaded(name, version)
    rows = X[np.arange(loaded.compiled.crossover_rows + 1) % len(X)]  # one row more than the crossover

    _, proba = predict_arrays(loaded.estimator, loaded.served.signature, rows, loaded.compiled)

    assert (proba == model.predict_proba(rows)).all(), "past the crossover, scikit-learn answers"


def test_a_model_skl2onnx_cannot_convert_serves_with_scikit_learn_and_says_why(svc, tmp_path):
    X, y = _data()
    model = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()).fit(X, y)
    name, version = _register(svc, tmp_path, model, X)

    record = compile_version(svc, name, version)

    assert record["status"] == "unsupported"
    assert "FunctionTransformer" in record["reason"] or "Pipeline" in record["reason"], record["reason"]
    assert svc.registry.loaded(name, version).compiled is None
    described = next(v for v in svc.registry.describe(name)["versions"] if v["version"] == version)
    assert described["backend"] == "sklearn" and described["compiled"]["reason"] == record["reason"]


def _tampered(model, signature: dict) -> bytes:
    """skl2onnx's conversion with the first tree's root threshold moved by 0.5."""
    graph = onnx.load_from_string(compiled.convert(model, signature))
    node = next(n for n in graph.graph.node if n.op_type.startswith("TreeEnsemble"))
    for attribute in node.attribute:
        if attribute.name in ("nodes_values", "nodes_values_as_tensor"):
            if attribute.floats:
                attribute.floats[0] += 0.5
            else:
                values = onnx.numpy_helper.to_array(attribute.t).copy()
                values[0] += 0.5
                attribute.t.CopyFrom(onnx.numpy_helper.from_array(values, attribute.t.name))
    return graph.SerializeToString()


def test_a_hand_made_onnx_file_that_disagrees_with_its_model_is_refused_by_the_gate(svc, tmp_path, forest):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    signature = svc.registry.resolve(name, version=version).signature

    record = compile_version(svc, name, version, onnx=_tampered(model, signature))

    assert record["status"] == "refused", "a conversion whose answers differ never serves"
    assert record["max_abs_diff"] > TOLERANCE and "differ" in record["reason"]
    assert "sha256" not in record, "no artifact is stored for a refused conversion"
    assert svc.registry.loaded(name, version).compiled is None


def test_a_linear_pipeline_converts_in_float64_and_passes(svc, tmp_path):
    X, y = _data(seed=3)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    name, version = _register(svc, tmp_path, model, X)

    record = compile_version(svc, name, version)

    assert record["input_dtype"] == "float64", "linear models compute in float64, and so does the graph"
    assert record["status"] in ("serving", "not_faster") and record["max_abs_diff"] <= TOLERANCE


def test_an_onnx_artifact_whose_sha256_changed_is_refused_at_load(svc, tmp_path, forest):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    record = compile_version(svc, name, version)
    path = Path(svc.settings.artifact_root) / record["artifact_path"]
    path.write_bytes(path.read_bytes() + b"\0")
    fresh = type(svc.registry)(svc.engine, svc.settings.artifact_root, compiled_loader=compiled.load)

    with pytest.raises(ArtifactIntegrityError) as refused:
        fresh.loaded(name, version)

    assert refused.value.code == "artifact_integrity_error" and "onnx" in refused.value.message


def test_the_estimator_alone_for_a_card_or_an_explanation_loads_no_session(svc, tmp_path, forest):
    """An API process reading a card needs the scikit-learn model, not ~30 MB of onnxruntime."""
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    compile_version(svc, name, version)
    sessions: list[str] = []

    def counting_loader(onnx: bytes, served):  # the real loader, counted
        sessions.append(served.name)
        return compiled.load(onnx, served)

    fresh = type(svc.registry)(svc.engine, svc.settings.artifact_root, compiled_loader=counting_loader)
    estimator, _ = fresh.load(name, version)
    assert sessions == [], "load() (cards, explanations) built a session"
    assert fresh.loaded(name, version).compiled is not None and sessions == [name]
    assert fresh.loaded(name, version).estimator is estimator, "the estimator is not loaded twice"


def test_turned_off_or_killed_by_inference_backend_sklearn_a_version_serves_scikit_learn(
    svc, tmp_path, forest
):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    compile_version(svc, name, version)
    killed = type(svc.registry)(svc.engine, svc.settings.artifact_root, compiled_loader=None)

    assert killed.loaded(name, version).compiled is None, "INFERENCE_BACKEND=sklearn loads no session"
    assert killed.describe(name)["versions"][0]["backend"] == "sklearn"
    assert turn_off(svc, name, version)["status"] == "off"
    assert svc.registry.loaded(name, version).compiled is None


def test_a_compiled_version_answers_through_a_worker_within_tolerance(svc, tmp_path, forest, worker, client):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    compile_version(svc, name, version)
    rows = np.random.default_rng(5).normal(0, 2, size=(5, X.shape[1])).tolist()  # votes split

    response = client.post(f"/v1/models/{name}/predictions?wait=20", json={"inputs": rows})

    assert response.status_code == 200, response.text
    outputs = response.get_json()["outputs"]
    expected = model.predict_proba(np.asarray(rows))
    assert [o["prediction"] for o in outputs] == model.predict(np.asarray(rows)).tolist()
    got = np.asarray([[o["probabilities"][str(c)] for c in model.classes_] for o in outputs])
    assert np.abs(got - expected).max() <= TOLERANCE
    assert not (got == expected).all(), "onnxruntime answered: float32 sums, not scikit-learn's bits"


def test_the_model_route_shows_the_backend_and_the_gate_figures(svc, tmp_path, forest, app, tokens):
    model, X = forest
    name, version = _register(svc, tmp_path, model, X)
    compile_version(svc, name, version)

    body = app.test_client().get(f"/v1/models/{name}", headers=bearer(tokens["predict"])).get_json()

    shown = body["versions"][0]
    assert shown["backend"] == "onnxruntime"
    assert {"max_abs_diff", "rows_checked", "crossover_rows", "tolerance"} <= set(shown["compiled"])
