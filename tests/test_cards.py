"""Model cards: every version's card from what the registry knows, in JSON and Markdown."""

from __future__ import annotations

import uuid

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from tests.conftest import client_for

NOTES = "For sorting iris flowers in the greenhouse. Not for other species."


def test_a_versions_card_shows_what_the_registry_knows(app, tokens, tmp_path):
    iris = load_iris(as_frame=True)
    joblib.dump(
        RandomForestClassifier(n_estimators=7, random_state=0).fit(iris.data, iris.target),
        tmp_path / "m.joblib",
    )
    iris.data.to_csv(tmp_path / "reference.csv", index=False)
    (tmp_path / "notes.md").write_text(NOTES)
    name = f"cardy-{uuid.uuid4().hex[:6]}"
    runner = app.test_cli_runner()
    registered = runner.invoke(
        args=["models", "register", "--name", name, "--file", str(tmp_path / "m.joblib"),
              "--reference", str(tmp_path / "reference.csv"), "--card-notes", str(tmp_path / "notes.md")]
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    client = client_for(app, tokens["predict"])

    card = client.get(f"/v1/models/{name}/versions/1/card").json
    markdown = client.get(f"/v1/models/{name}/versions/1/card", headers={"Accept": "text/markdown"})

    sections = card["sections"]
    assert sections["intended_use_and_limitations"] == NOTES
    assert sections["model"]["estimator"] == "RandomForestClassifier" and sections["model"]["aliases"] == [
        "champion"
    ]
    assert sections["signature"]["feature_names"] == list(iris.data.columns)
    importance = sections["feature_importance"]
    assert {row["feature"] for row in importance} == set(iris.data.columns)
    assert [row["mean_abs_shap"] for row in importance] == sorted(
        (row["mean_abs_shap"] for row in importance), reverse=True
    )
    assert markdown.mimetype == "text/markdown"
    for words in (
        NOTES,
        "Global feature importance",
        "Hyperparameters",
        "n_estimators",
        importance[0]["feature"],
    ):
        assert words in markdown.text, words
    written = runner.invoke(args=["models", "card", name, "-o", str(tmp_path / "card.md")])
    assert written.exit_code == 0 and NOTES in (tmp_path / "card.md").read_text()
    assert client.get(f"/v1/models/{name}/versions/9/card").status_code == 404
