"""Explanations: each row's feature contributions, computed by the worker with shap."""

from __future__ import annotations

import uuid
from datetime import timedelta

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy import insert, select

from app.db import Batch, Job, utcnow
from app.predictions.submission import job_record
from tests.helpers import (
    IRIS_FEATURES,
    arrow_body,
    arrow_table,
    client_for,
    count_jobs,
    iris_rows,
    stored_estimator,
    wait_until_no_worker_holds,
)


@pytest.fixture
def workers(worker, bulk_worker):
    """Explained rows are taken by the bulk worker (app/celery_app.py), plain ones by the online one."""


def test_a_forest_explains_the_predicted_class_probability(client, svc, registered, workers):
    rows = iris_rows(5).tolist()

    job = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": rows, "explain": True}).json

    assert job["status"] == "succeeded", job
    proba = stored_estimator(svc, "iris").predict_proba(np.asarray(rows))
    classes = list(stored_estimator(svc, "iris").classes_)
    for row, output in zip(proba, job["outputs"], strict=True):
        explanation = output["explanation"]
        assert explanation["class"] == output["prediction"]
        assert list(explanation["contributions"]) == IRIS_FEATURES
        total = explanation["base_value"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(row[classes.index(output["prediction"])], abs=1e-6), "shap is additive"


def test_a_linear_regressor_explains_its_prediction(client, svc, registered, workers):
    rows = (np.random.default_rng(7).normal(0, 0.05, (3, 10))).tolist()

    job = client.post("/v1/models/diabetes/predictions?wait=20", json={"inputs": rows, "explain": True}).json

    assert job["status"] == "succeeded", job
    for output in job["outputs"]:
        explanation = output["explanation"]
        assert "class" not in explanation
        total = explanation["base_value"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(output["prediction"], rel=1e-6)


def test_a_pipeline_is_explained_through_its_one_to_one_steps(client, svc, workers, tmp_path):
    iris = load_iris(as_frame=True)
    name = f"scaled-{uuid.uuid4().hex[:6]}"
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(iris.data, iris.target)
    joblib.dump(model, tmp_path / "scaled.joblib")
    svc.registry.register(name, tmp_path / "scaled.joblib", reference=iris.data)

    job = client.post(
        f"/v1/models/{name}/predictions?wait=20", json={"inputs": iris_rows(2).tolist(), "explain": True}
    ).json

    assert job["status"] == "succeeded", job
    for output in job["outputs"]:
        assert output["explanation"]["class"] == output["prediction"]
        assert list(output["explanation"]["contributions"]) == IRIS_FEATURES


def test_a_model_without_a_fast_explainer_is_refused_at_submit(client, svc, tmp_path):
    iris = load_iris(as_frame=True)
    name = f"knn-{uuid.uuid4().hex[:6]}"
    joblib.dump(KNeighborsClassifier().fit(iris.data, iris.target), tmp_path / "knn.joblib")
    svc.registry.register(name, tmp_path / "knn.joblib")
    before = count_jobs(svc)

    response = client.post(
        f"/v1/models/{name}/predictions", json={"inputs": iris_rows(1).tolist(), "explain": True}
    )

    assert response.status_code == 422
    assert response.json["error"]["code"] == "explanation_unsupported"
    assert response.json["error"]["details"]["estimator"] == "KNeighborsClassifier"
    assert count_jobs(svc) == before


def test_explained_outputs_are_cached_apart_from_plain_ones(client, registered, workers):
    rows = iris_rows(2).tolist()
    explained = client.post(
        "/v1/models/iris/predictions?wait=20", json={"inputs": rows, "explain": True}
    ).json
    assert explained["status"] == "succeeded"

    again = client.post("/v1/models/iris/predictions", json={"inputs": rows, "explain": True})
    plain = client.post("/v1/models/iris/predictions", json={"inputs": rows})

    assert again.status_code == 200, "the same rows explained again come from the cache at once"
    assert again.json["outputs"] == explained["outputs"]
    assert plain.status_code == 202, "not answered from an explained job's outputs"
    done = client.get(f"/v1/predictions/{plain.json['id']}?wait=20").json
    assert all("explanation" not in output for output in done["outputs"])
    assert [o["prediction"] for o in done["outputs"]] == [o["prediction"] for o in explained["outputs"]]


def test_every_class_is_explained_on_request_and_equals_shap_in_process(client, svc, registered, workers):
    import shap

    rows = iris_rows(4).tolist()

    job = client.post(
        "/v1/models/iris/predictions?wait=20",
        json={"inputs": rows, "explain": True, "explain_classes": "all"},
    ).json

    assert job["status"] == "succeeded", job
    model = stored_estimator(svc, "iris")
    proba = model.predict_proba(np.asarray(rows))
    # (rows, features, classes)
    expected = np.asarray(shap.TreeExplainer(model).shap_values(np.asarray(rows)))
    for i, output in enumerate(job["outputs"]):
        by_class = output["explanation"]["by_class"]
        assert list(by_class) == [str(c) for c in model.classes_]
        for k, label in enumerate(model.classes_):
            explained = by_class[str(label)]
            total = explained["base_value"] + sum(explained["contributions"].values())
            assert total == pytest.approx(proba[i, k], abs=1e-6), "each class's output is explained"
            assert list(explained["contributions"].values()) == pytest.approx(expected[i, :, k], abs=1e-9)
        predicted = by_class[str(output["prediction"])]
        assert predicted["contributions"] == output["explanation"]["contributions"]


def test_explaining_every_class_is_cached_apart_from_the_predicted_class_only(client, registered, workers):
    rows = iris_rows(2).tolist()
    first = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": rows, "explain": True}).json
    assert first["status"] == "succeeded" and "by_class" not in first["outputs"][0]["explanation"]

    every = client.post(
        "/v1/models/iris/predictions?wait=20",
        json={"inputs": rows, "explain": True, "explain_classes": "all"},
    )
    again = client.post(
        "/v1/models/iris/predictions", json={"inputs": rows, "explain": True, "explain_classes": "all"}
    )

    assert every.json["status"] == "succeeded", every.json
    assert all("by_class" in output["explanation"] for output in every.json["outputs"])
    assert again.status_code == 200 and again.json["outputs"] == every.json["outputs"], "now from the cache"


@pytest.mark.parametrize(
    "body",
    [
        {"explain_classes": "all"},  # without explain
        {"explain": True, "explain_classes": "some"},
        {"explain": "yes"},
    ],
)
def test_bad_explain_options_are_refused_and_store_nothing(client, svc, registered, body):
    before = count_jobs(svc)

    response = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1).tolist(), **body})

    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_input"
    assert set(response.json["error"]["details"]["fields"]) <= {"explain", "explain_classes"}
    assert count_jobs(svc) == before


@pytest.mark.parametrize(
    ("query", "explained_classes"), [("explain=true", None), ("explain=true&explain_classes=all", 3)]
)
def test_an_arrow_request_asks_for_explanations_in_its_query_string(
    client, registered, workers, query, explained_classes
):
    table = arrow_table(iris_rows(2))

    response = client.post(
        f"/v1/models/iris/predictions?wait=20&{query}",
        data=arrow_body(table),
        content_type="application/vnd.apache.arrow.stream",
    )

    assert response.status_code == 200, response.json
    for output in response.json["outputs"]:
        assert set(output["explanation"]["contributions"]) == set(IRIS_FEATURES)
        assert len(output["explanation"].get("by_class", {})) == (explained_classes or 0)


def test_a_partly_cached_explained_request_explains_its_uncached_rows_too(client, registered, workers):
    seen, fresh = iris_rows(1).tolist(), iris_rows(1).tolist()
    first = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": seen, "explain": True}).json
    assert first["status"] == "succeeded"

    job = client.post(
        "/v1/models/iris/predictions?wait=20", json={"inputs": seen + fresh, "explain": True}
    ).json

    assert job["status"] == "succeeded", job
    assert job["outputs"][0] == first["outputs"][0], "the seen row from the cache"
    assert set(job["outputs"][1]["explanation"]["contributions"]) == set(IRIS_FEATURES), (
        "the fresh row explained"
    )


def test_explained_rows_are_run_by_the_bulk_worker_and_plain_ones_by_the_online_worker(
    client, svc, registered, workers, worker_name
):
    explained = client.post(
        "/v1/models/iris/predictions?wait=20", json={"inputs": iris_rows(2).tolist(), "explain": True}
    ).json
    plain = client.post("/v1/models/iris/predictions?wait=20", json={"inputs": iris_rows(2).tolist()}).json

    assert explained["status"] == plain["status"] == "succeeded"
    with svc.engine.connect() as conn:
        ran_by = dict(
            conn.execute(
                select(Job.id, Batch.worker)
                .join(Batch, Batch.id == Job.batch_id)
                .where(Job.id.in_([uuid.UUID(explained["id"]), uuid.UUID(plain["id"])]))
            ).all()
        )
    assert ran_by[uuid.UUID(explained["id"])].startswith("bulk-"), ran_by
    assert ran_by[uuid.UUID(plain["id"])] == worker_name, ran_by


def test_an_explained_job_queued_again_by_the_sweeper_is_explained_all_the_same(
    app, tokens, svc, registered, workers
):
    from workers import sweeper

    # A job Redis lost (say, wiped): stored as queued long ago, nothing on any queue.
    served = svc.registry.resolve("iris")
    record = job_record(
        uuid.uuid4(), "iris", served.version, iris_rows(2).tolist(), [None, None],
        created_at=utcnow() - timedelta(seconds=svc.settings.stuck_job_seconds + 60),
        owner=None, explain="all",
    )  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Job), record)

    assert sweeper.requeue_stuck_jobs(svc) >= 1
    done = client_for(app, tokens["admin"]).get(f"/v1/predictions/{record['id']}?wait=20").json

    assert done["status"] == "succeeded", done
    assert all(len(output["explanation"]["by_class"]) == 3 for output in done["outputs"])


def test_a_request_asking_for_explanations_has_a_row_cap_of_its_own(client, svc, registered):
    limit = svc.settings.explain_max_rows
    before = count_jobs(svc)

    refused = client.post(
        "/v1/models/iris/predictions", json={"inputs": iris_rows(limit + 1).tolist(), "explain": True}
    )

    assert refused.status_code == 413, refused.json
    assert refused.json["error"]["code"] == "payload_too_large"
    assert refused.json["error"]["details"]["limit"] == limit
    assert "EXPLAIN_MAX_ROWS" in refused.json["error"]["message"]
    assert count_jobs(svc) == before


def test_the_sweeper_wakes_a_worker_for_explained_rows_left_on_their_queue(
    app, tokens, svc, registered, workers
):
    from app.predictions.items import encode_item
    from app.predictions.queue import RowQueue
    from workers import sweeper

    # Rows on the explained queue whose wake-up was lost (no task was sent for them).
    served = svc.registry.resolve("iris")
    record = job_record(
        uuid.uuid4(), "iris", served.version, iris_rows(1).tolist(), [None],
        created_at=utcnow(), owner=None, explain="predicted",
    )  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Job), record)
    item = encode_item(
        str(record["id"]),
        record["inputs"],
        n_rows=1,
        created_at=record["created_at"].isoformat(),
        explain="predicted",
    )
    wait_until_no_worker_holds(svc, "iris", served.version, explained=True)  # an earlier test's
    held = not RowQueue(svc.redis, "iris", served.version, explained=True).push(item)
    assert not held, "no worker holds the queue, so only a wake-up drains it"

    assert sweeper.wake_workers(svc) >= 1
    done = client_for(app, tokens["admin"]).get(f"/v1/predictions/{record['id']}?wait=20").json

    assert done["status"] == "succeeded", done
    assert set(done["outputs"][0]["explanation"]["contributions"]) == set(IRIS_FEATURES)
