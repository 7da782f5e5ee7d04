"""Model cards: every version's card from what the registry knows, in JSON and Markdown."""

from __future__ import annotations

import io
import uuid

import joblib
import matplotlib.image
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sqlalchemy import update

from app.db import ModelVersion
from tests.helpers import client_for

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
    assert "![Global feature importance](card/importance.png)" in markdown.text
    plot = client.get(f"/v1/models/{name}/versions/1/card/importance.png")
    assert plot.status_code == 200 and plot.mimetype == "image/png"
    assert _png_size(plot.data) == (640, 240), "a 6.4-inch-wide chart, a bar per feature"
    written = runner.invoke(args=["models", "card", name, "-o", str(tmp_path / "card.md")])
    assert written.exit_code == 0 and NOTES in (tmp_path / "card.md").read_text()
    assert "![Global feature importance](card-importance.png)" in (tmp_path / "card.md").read_text()
    assert _png_size((tmp_path / "card-importance.png").read_bytes()) == (640, 240)
    assert client.get(f"/v1/models/{name}/versions/9/card").status_code == 404
    assert client.get(f"/v1/models/{name}/versions/9/card/importance.png").status_code == 404


def test_a_card_without_a_reference_sample_has_no_plot(app, tokens, tmp_path):
    iris = load_iris(as_frame=True)
    joblib.dump(RandomForestClassifier(n_estimators=3).fit(iris.data, iris.target), tmp_path / "m.joblib")
    name = f"bare-{uuid.uuid4().hex[:6]}"
    app.extensions["predq"].registry.register(name, tmp_path / "m.joblib")
    client = client_for(app, tokens["predict"])

    markdown = client.get(f"/v1/models/{name}/versions/1/card", headers={"Accept": "text/markdown"}).text
    plot = client.get(f"/v1/models/{name}/versions/1/card/importance.png")

    assert "importance.png" not in markdown and "Not computed" in markdown
    assert plot.status_code == 404 and plot.json["error"]["code"] == "importance_unavailable"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG"), data[:8]
    height, width, _ = matplotlib.image.imread(io.BytesIO(data), format="png").shape
    return width, height


def test_a_versions_importance_is_computed_once_per_process(app, tokens, svc, tmp_path):
    """shap over the reference sample takes minutes on a deep forest: the card and its plot
    reuse the first answer (app/lifecycle/cards.py) instead of computing it again."""
    iris = load_iris(as_frame=True)
    joblib.dump(
        RandomForestClassifier(n_estimators=3, random_state=0).fit(iris.data, iris.target),
        tmp_path / "m.joblib",
    )
    name = f"once-{uuid.uuid4().hex[:6]}"
    svc.registry.register(name, tmp_path / "m.joblib", reference=iris.data)
    client = client_for(app, tokens["predict"])
    first = client.get(f"/v1/models/{name}/versions/1/card").json["sections"]["feature_importance"]

    # Without its reference sample the version's importance could not be computed again.
    with svc.engine.begin() as conn:
        conn.execute(
            update(ModelVersion)
            .where(ModelVersion.sha256 == svc.registry.resolve(name).sha256)
            .values(reference=None)
        )

    assert first, "computed from the reference sample"
    assert client.get(f"/v1/models/{name}/versions/1/card").json["sections"]["feature_importance"] == first
    assert client.get(f"/v1/models/{name}/versions/1/card/importance.png").status_code == 200


def test_a_version_number_beyond_what_the_database_holds_is_not_found(client, registered):
    # The card routes take any integer; PostgreSQL's 32-bit column refused 2**31 (a 500).
    for path in (
        "/v1/models/iris/versions/2147483648/card",
        "/v1/models/iris/versions/2147483648/card/importance.png",
    ):
        response = client.get(path)

        assert response.status_code == 404, (
            path,
            response.status_code,
            response.get_data(as_text=True)[:200],
        )
        assert response.json["error"]["code"] == "version_not_found", path
