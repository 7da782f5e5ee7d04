"""The retrain gate: a fixed evaluation set and a paired test, checks on the data, imports that can be dropped."""

from __future__ import annotations

import uuid
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.lifecycle import training, training_data
from tests.helpers import client_for

SEEDS = range(20)


def _model(svc, tmp_path: Path, estimator, x: pd.DataFrame, y: pd.Series) -> str:
    name = f"gate-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.joblib"
    joblib.dump(estimator.fit(x, y), path)
    svc.registry.register(name, path)
    return name


def _frame(x: pd.DataFrame, y) -> pd.DataFrame:
    return x.assign(y=np.asarray(y))


def _logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def test_shuffled_labels_are_never_promoted(svc, tmp_path):
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    promoted = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        champion, fixed, new = order[:150], order[150:350], order[350:]
        name = _model(svc, tmp_path, _logistic(), x.iloc[champion], y.iloc[champion])
        training_data.register_evaluation_set(svc, name, _frame(x.iloc[fixed], y.iloc[fixed]), "y")
        shuffled = training_data.import_examples(
            svc, name, _frame(x.iloc[new], rng.permutation(y.iloc[new].to_numpy())), "y"
        )
        assert shuffled["status"] == "quarantined", shuffled["checks"]["labels"]
        # An admin accepts it all the same: the gate must still hold.
        training_data.accept_import(svc, name, shuffled["id"], "test")

        run = training.retrain(svc, name)

        assert run["status"] in ("kept", "promoted"), run["reason"]
        promoted += [seed] if run["status"] == "promoted" else []
    assert promoted == [], "a model trained on shuffled labels was promoted"


def test_heavy_label_noise_on_a_regressor_is_never_promoted(svc, tmp_path):
    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    promoted = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        champion, fixed, new = order[:200], order[200:342], order[342:]
        name = _model(svc, tmp_path, Ridge(alpha=0.1), x.iloc[champion], y.iloc[champion])
        training_data.register_evaluation_set(svc, name, _frame(x.iloc[fixed], y.iloc[fixed]), "y")
        noisy = y.iloc[new].to_numpy() + rng.normal(0, 3 * y.std(), len(new))
        imported = training_data.import_examples(svc, name, _frame(x.iloc[new], noisy), "y")
        training_data.accept_import(svc, name, imported["id"], "test")  # if quarantined: the gate must hold

        run = training.retrain(svc, name)

        assert run["status"] in ("kept", "promoted", "rejected_data"), run["reason"]
        promoted += [seed] if run["status"] == "promoted" else []
    assert promoted == [], "a regressor trained on noise was promoted"


def test_a_genuinely_better_candidate_is_promoted(svc, tmp_path):
    promoted = 0
    for seed in SEEDS:
        features, labels = make_classification(
            n_samples=2600, n_features=20, n_informative=8, class_sep=0.8, random_state=seed
        )
        x = pd.DataFrame(features, columns=[f"f{j}" for j in range(20)])
        y = pd.Series(labels)
        name = _model(svc, tmp_path, _logistic(), x.iloc[:40], y.iloc[:40])
        training_data.register_evaluation_set(svc, name, _frame(x.iloc[100:600], y.iloc[100:600]), "y")
        training_data.import_examples(svc, name, _frame(x.iloc[600:], y.iloc[600:]), "y")

        run = training.retrain(svc, name)

        promoted += run["status"] == "promoted"
    assert promoted >= 18, f"only {promoted} of 20 better candidates were promoted"


def test_a_dropped_import_is_left_out_of_the_next_run(app, svc, tokens, tmp_path):
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    name = _model(svc, tmp_path, _logistic(), x.iloc[:100], y.iloc[:100])
    training_data.register_evaluation_set(svc, name, _frame(x.iloc[100:250], y.iloc[100:250]), "y")
    kept = training_data.import_examples(svc, name, _frame(x.iloc[250:400], y.iloc[250:400]), "y")
    bad = training_data.import_examples(svc, name, _frame(x.iloc[400:], y.iloc[400:]), "y")
    admin = client_for(app, tokens["admin"])

    before = training.retrain(svc, name)
    dropped = admin.delete(f"/v1/models/{name}/imports/{bad['id']}")
    after = training.retrain(svc, name)

    assert sorted(before["imports"]) == sorted([kept["id"], bad["id"]]) and before["rows"] == 319
    assert dropped.status_code == 200 and dropped.json["dropped_at"] is not None
    assert after["imports"] == [kept["id"]] and after["rows"] == 150
    listed = admin.get(f"/v1/models/{name}/imports").json["imports"]
    assert [(i["id"], i["dropped_at"] is not None) for i in listed] == [
        (bad["id"], True),
        (kept["id"], False),
    ]
    assert admin.delete(f"/v1/models/{name}/imports/999999").status_code == 404
    assert client_for(app, tokens["predict"]).get(f"/v1/models/{name}/imports").status_code == 403


def test_data_the_model_cannot_learn_from_is_rejected_before_training(svc, tmp_path):
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    name = _model(svc, tmp_path, _logistic(), x.iloc[:100], y.iloc[:100])
    training_data.register_evaluation_set(svc, name, _frame(x.iloc[100:250], y.iloc[100:250]), "y")
    versions = len(svc.registry.describe(name)["versions"])
    unknown = training_data.import_examples(svc, name, _frame(x.iloc[250:], np.full(len(x) - 250, 7)), "y")
    assert unknown["status"] == "quarantined", "no label agrees with the model"
    training_data.accept_import(svc, name, unknown["id"], "test")  # accepted all the same: the run checks too

    run = training.retrain(svc, name)

    assert unknown["problems"], "the import's checks say so at once"
    assert run["status"] == "rejected_data" and "labels the model does not know: 7" in run["reason"]
    assert len(svc.registry.describe(name)["versions"]) == versions, "nothing was trained or registered"


def test_a_drift_check_on_demand_stores_the_report_beat_would(app, svc, tokens, registered):
    admin = client_for(app, tokens["admin"])

    checked = admin.post("/v1/models/iris/drift-checks")
    newest = admin.get("/v1/models/iris/drift").json["reports"][0]

    assert checked.status_code == 200, checked.json
    assert checked.json["id"] == newest["id"] and checked.json["status"] == newest["status"]
    assert client_for(app, tokens["predict"]).post("/v1/models/iris/drift-checks").status_code == 403
    cli = app.test_cli_runner().invoke(args=["models", "drift-check", "iris"])
    assert cli.exit_code == 0 and '"status"' in cli.output
