"""Traffic policies: weighted splits, sticky routing keys, and a shadow that is never returned."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from app import create_app
from app.db import Job, ShadowOutput
from tests.helpers import client_for

ROW = [6.3, 2.9, 5.6, 1.8]


@pytest.fixture(scope="module")
def split(svc, artifacts, worker, app, tokens):
    """Model "split": v1 champion, v2 challenger, both with ROW already in their caches."""
    for _ in range(2):
        svc.registry.register("split", artifacts["iris"])
    svc.registry.set_alias("split", "challenger", 2)
    http = client_for(app, tokens["predict"])
    for version in (1, 2):
        warm = http.post("/v1/models/split/predictions?wait=20", json={"inputs": [ROW], "version": version})
        assert warm.json["status"] == "succeeded"
    return "split"


def test_ten_thousand_requests_split_90_10_within_two_points(app, svc, tokens, split):
    admin = client_for(app, tokens["admin"])
    policy = {"routes": [{"alias": "champion", "weight": 90}, {"alias": "challenger", "weight": 10}]}
    assert admin.put("/v1/models/split/traffic", json=policy).status_code == 200
    with svc.engine.connect() as conn:
        jobs_before = dict(conn.execute(select(Job.model_version, func.count()).where(Job.model_name == "split")
                                        .group_by(Job.model_version)).all())  # fmt: skip

    http = client_for(app, tokens["predict"])
    served = Counter(http.post("/v1/models/split/predictions", json={"inputs": [ROW]}).json["model"]["version"]
                     for _ in range(10_000))  # fmt: skip

    assert sum(served.values()) == 10_000
    assert abs(served[2] / 10_000 - 0.10) <= 0.02, served
    with svc.engine.connect() as conn:
        jobs_after = dict(conn.execute(select(Job.model_version, func.count()).where(Job.model_name == "split")
                                       .group_by(Job.model_version)).all())  # fmt: skip
    recorded = {v: jobs_after.get(v, 0) - jobs_before.get(v, 0) for v in (1, 2)}
    assert recorded == {1: served[1], 2: served[2]}, "every job records the version that served it"


def test_a_routing_key_always_lands_on_the_same_version_in_every_api_process(app, settings, tokens, split):
    admin = client_for(app, tokens["admin"])
    policy = {"routes": [{"alias": "champion", "weight": 50}, {"alias": "challenger", "weight": 50}]}
    assert admin.put("/v1/models/split/traffic", json=policy).status_code == 200
    # Another API process, started afterwards (a restart), with caches of its own.
    other = client_for(create_app(settings), tokens["predict"])
    first = client_for(app, tokens["predict"])

    def version(http, key: str) -> int:
        body = {"inputs": [ROW], "routing_key": key}
        return http.post("/v1/models/split/predictions", json=body).json["model"]["version"]

    keys = [f"customer-{i}" for i in range(150)]
    assigned = {key: version(first, key) for key in keys}
    for key in keys:
        assert version(first, key) == version(other, key) == assigned[key], key
    assert set(assigned.values()) == {1, 2}, "both versions serve some keys"


def test_a_shadow_scores_the_rows_and_is_never_returned(app, svc, tokens, split):
    admin = client_for(app, tokens["admin"])
    policy = {"routes": [{"alias": "champion", "weight": 100}], "shadow": {"alias": "challenger"}}
    assert admin.put("/v1/models/split/traffic", json=policy).status_code == 200
    http = client_for(app, tokens["predict"])
    rows = [[5.9, 3.0, 5.1, 1.75], [5.0, 3.4, 1.5, 0.25]]

    job = http.post("/v1/models/split/predictions?wait=20", json={"inputs": rows}).json

    assert job["status"] == "succeeded" and job["model"]["version"] == 1
    assert set(job) == {"id", "status", "done", "model", "outputs", "error", "priority", "deadline",
                        "created_at", "completed_at", "webhook"}, "nothing of the shadow's"  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        with svc.engine.connect() as conn:
            table = ShadowOutput.__table__
            stored = conn.execute(select(table).where(table.c.job_id == _uuid(job["id"]))).mappings().all()
        if stored or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (shadow,) = stored
    assert shadow["model_version"] == 2 and len(shadow["outputs"]) == 2
    polled = http.get(f"/v1/predictions/{job['id']}").json
    assert polled["outputs"] == job["outputs"] and polled["model"]["version"] == 1
    compared = admin.get("/v1/models/split/shadow-outputs").json
    pair = next(p for p in compared["jobs"] if p["job_id"] == job["id"])
    assert pair["served"]["version"] == 1 and pair["shadow"]["version"] == 2
    assert compared["prediction_agreement"] == 1.0, "the same artifact under two versions agrees"
    assert http.get("/v1/models/split/shadow-outputs").status_code == 403


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        ({"routes": []}, 422),
        ({"routes": [{"alias": "champion", "weight": 0}]}, 422),
        ({"routes": [{"alias": "champion", "version": 1}]}, 422),
        ({"routes": [{"alias": "nobody"}]}, 404),
        ({"routes": [{"version": 99}]}, 404),
        ({"routes": [{"alias": "champion"}], "shadow": {"alias": "nobody"}}, 404),
    ],
    ids=[
        "no routes",
        "zero weight",
        "alias and version",
        "unknown alias",
        "unknown version",
        "unknown shadow",
    ],
)
def test_a_bad_policy_is_refused_and_changes_nothing(app, svc, tokens, split, policy, status):
    before = svc.registry.describe("split")["traffic_policy"]
    response = client_for(app, tokens["admin"]).put("/v1/models/split/traffic", json=policy)
    assert response.status_code == status, response.json
    assert svc.registry.describe("split")["traffic_policy"] == before


def test_the_cli_sets_a_policy(app, svc, split):
    result = app.test_cli_runner().invoke(
        args=["models", "traffic", "split", "champion=80", "v2=20", "--shadow", "v1"]
    )
    assert result.exit_code == 0, result.output
    assert svc.registry.describe("split")["traffic_policy"] == {
        "routes": [{"alias": "champion", "weight": 80.0}, {"version": 2, "weight": 20.0}],
        "shadow": {"version": 1},
    }
    assert app.test_cli_runner().invoke(args=["models", "traffic", "split", "champion"]).exit_code != 0


def _uuid(text: str):
    import uuid

    return uuid.UUID(text)


def test_an_idempotent_replay_is_the_same_job_whichever_route_it_draws(app, tokens, split):
    """The body's hash is of what the client sent, not of the route the policy drew for it."""
    admin = client_for(app, tokens["admin"])
    policy = {"routes": [{"alias": "champion", "weight": 50}, {"alias": "challenger", "weight": 50}]}
    assert admin.put("/v1/models/split/traffic", json=policy).status_code == 200
    http = client_for(app, tokens["predict"])
    headers = {"Idempotency-Key": f"replay-{time.monotonic_ns()}"}

    answers = [
        http.post("/v1/models/split/predictions", json={"inputs": [ROW]}, headers=headers) for _ in range(12)
    ]

    assert {a.status_code for a in answers} <= {200, 202}, [a.json for a in answers if a.status_code >= 400][
        :1
    ]
    assert len({a.json["id"] for a in answers}) == 1
    other_key = http.post(
        "/v1/models/split/predictions", json={"inputs": [ROW], "routing_key": "k"}, headers=headers
    )
    assert other_key.status_code == 409, "a routing_key is part of the body"
