"""Rate limits per key (429) and backpressure per model queue (503), both with Retry-After."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from unittest.mock import patch

import pytest

from app import create_app
from app.predictions.items import encode_item
from app.predictions.queue import RowQueue, queue_key
from tests.helpers import client_for, count_jobs

ROW = {"inputs": [[6.1, 2.8, 4.7, 1.2]]}


def test_a_key_over_its_own_limit_gets_429_and_other_keys_do_not(app, svc, registered):
    _, limited = svc.keys.create("limited", ["predict"], rate_limit="3/minute")
    _, other = svc.keys.create("unlimited-neighbour", ["predict"])
    http = client_for(app, limited)

    statuses = [http.get("/v1/models/iris").status_code for _ in range(3)]
    refused = http.get("/v1/models/iris")

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert refused.json["error"]["details"]["limit"] == "3 per 1 minute"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61, "until the window ends (whole seconds, rounded up)"
    assert client_for(app, other).get("/v1/models/iris").status_code == 200


def test_every_limit_of_a_key_counts(app, svc, registered):
    _, token = svc.keys.create("two-limits", ["predict"], rate_limit="100/second;3/minute")
    http = client_for(app, token)

    statuses = [http.get("/v1/models/iris").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429], "the per-minute limit refuses though the per-second one has room"
    assert http.get("/v1/models/iris").json["error"]["details"]["limit"] == "3 per 1 minute"


def test_a_key_without_its_own_limit_gets_the_default(settings, svc, registered):
    strict = create_app(settings.replace(rate_limit="2/minute"))
    _, token = svc.keys.create("default-limited", ["predict"])
    http = client_for(strict, token)

    statuses = [http.post("/v1/models/iris/predictions", json=ROW).status_code for _ in range(3)]

    assert set(statuses[:2]) <= {200, 202}, "200 when a cached row answers at once"
    assert statuses[2] == 429


def test_health_checks_are_never_rate_limited(settings):
    strict = create_app(settings.replace(rate_limit="1/minute"))
    assert [strict.test_client().get("/healthz").status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("wait", [0, 1], ids=["stored-first", "waiting"])
def test_a_deep_queue_gets_503_with_retry_after_and_stores_nothing(settings, svc, artifacts, tokens, wait):
    model = f"backlogged-{wait}"
    served = svc.registry.register(model, artifacts["iris"])
    queue = RowQueue(svc.redis, model, served.version)
    # Items pushed without a task message: no worker drains them during the test.
    for _ in range(3):
        queue.push(
            encode_item(
                str(uuid.uuid4()), [[1.0, 2.0, 3.0, 4.0]], n_rows=1, created_at="2026-01-01T00:00:00+00:00"
            )
        )
    try:
        full = client_for(create_app(settings.replace(max_queued_jobs=3)), tokens["predict"])
        jobs_before = count_jobs(svc)

        refused = full.post(f"/v1/models/{model}/predictions?wait={wait}", json=ROW)

        assert refused.status_code == 503
        assert refused.json["error"]["code"] == "overloaded"
        assert refused.json["error"]["details"]["queued_jobs"] == 3
        assert int(refused.headers["Retry-After"]) >= 1
        assert count_jobs(svc) == jobs_before and len(queue) == 3

        roomier = client_for(create_app(settings.replace(max_queued_jobs=4)), tokens["predict"])
        assert roomier.post(f"/v1/models/{model}/predictions?wait={wait}", json=ROW).status_code == 202
    finally:
        svc.redis.delete(queue_key(model, served.version))


@pytest.mark.parametrize("wait", [0, 1], ids=["stored-first", "waiting"])
def test_the_bound_counts_a_versions_jobs_on_every_priority_together(settings, svc, artifacts, tokens, wait):
    model = f"backlogged-priorities-{wait}"
    served = svc.registry.register(model, artifacts["iris"])
    # Two low jobs and one high waiting, none normal: a normal submit's own queue is empty.
    for priority in ("low", "low", "high"):
        RowQueue(svc.redis, model, served.version, priority=priority).push(
            encode_item(
                str(uuid.uuid4()), [[1.0, 2.0, 3.0, 4.0]], n_rows=1, created_at="2026-01-01T00:00:00+00:00",
                priority=priority,
            )
        )  # fmt: skip
    queue = RowQueue(svc.redis, model, served.version)
    try:
        full = client_for(create_app(settings.replace(max_queued_jobs=3)), tokens["predict"])
        jobs_before = count_jobs(svc)

        refused = full.post(f"/v1/models/{model}/predictions?wait={wait}", json=ROW)

        assert refused.status_code == 503, "three jobs wait on the version: the bound is its total"
        assert refused.json["error"]["details"]["queued_jobs"] == 3, "every priority's jobs counted"
        assert count_jobs(svc) == jobs_before and len(queue) == 3, "nothing stored, nothing pushed"
    finally:
        svc.redis.delete(*queue.keys)


def test_with_auth_off_the_limit_counts_per_client_address(settings, registered):
    open_app = create_app(settings.replace(auth_enabled=False, rate_limit="2/minute"))
    here = open_app.test_client()
    there = open_app.test_client()
    there.environ_base["REMOTE_ADDR"] = "10.0.0.7"

    statuses = [here.get("/v1/models/iris").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert there.get("/v1/models/iris").status_code == 200, "another address has its own count"


@pytest.mark.parametrize("wait", [0, 0.2], ids=["stored-first", "waiting"])
def test_a_submit_counts_with_every_other_request_and_over_the_limit_stores_nothing(
    app, svc, registered, wait
):
    # A submit sends its count in the same Redis call as its cache lookup and push; it must
    # land on the same counter as the other routes', and a submit refused before that call
    # (here a 422) is counted all the same.
    _, token = svc.keys.create(f"submits-limited-{wait}", ["predict"], rate_limit="4/minute")
    http = client_for(app, token)
    route = f"/v1/models/iris/predictions?wait={wait}"

    def fresh_row() -> dict[str, list[list[float]]]:
        return {"inputs": [[5.0, 3.0, 1.0, uuid.uuid4().int % 1000 / 1000]]}

    statuses = [
        http.get("/v1/models/iris").status_code,
        http.post(route, json=fresh_row()).status_code,
        http.post(route, json={"inputs": [[1.0, 2.0]]}).status_code,
        http.post(route, json=fresh_row()).status_code,
    ]
    jobs_before = count_jobs(svc)
    refused = http.post(route, json=fresh_row())

    assert (
        statuses[0] == 200 and statuses[1] in (200, 202) and statuses[2] == 422 and statuses[3] in (200, 202)
    )
    assert refused.status_code == 429
    assert refused.json["error"]["details"]["limit"] == "4 per 1 minute"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert count_jobs(svc) == jobs_before, "a refused submit stored a job"
    assert http.get("/v1/models/iris").status_code == 429, "the submits spent the shared count"


def test_a_waiting_submit_makes_one_redis_call_before_its_wait(app, svc, tokens, registered):
    # The rate-limit count, the cache lookup, the backpressure check and the push are one
    # script call; the long-poll is the only other. Counted on the app's own Redis clients.
    svc_app = app.extensions["predq"]
    limiter = app.extensions["rate_limits"]._storage.get_connection()
    http = client_for(app, tokens["predict"])
    http.post(
        "/v1/models/iris/predictions?wait=1", json={"inputs": [[5.0, 3.1, 1.2, 0.3]]}
    )  # loads the script

    calls: dict[str, list[str]] = {"redis": [], "redis_wait": [], "limiter": []}
    with ExitStack() as stack:
        for name, client in (
            ("redis", svc_app.redis),
            ("redis_wait", svc_app.redis_wait),
            ("limiter", limiter),
        ):
            real = client.execute_command

            def counted(*args, _real=real, _name=name, **kwargs):
                calls[_name].append(str(args[0]).upper())
                return _real(*args, **kwargs)

            stack.enter_context(patch.object(client, "execute_command", counted))
        answer = http.post("/v1/models/iris/predictions?wait=1", json={"inputs": [[5.0, 3.1, 1.2, 0.31]]})

    assert answer.status_code in (200, 202)
    assert calls == {"redis": ["EVALSHA"], "redis_wait": ["BLMOVE"], "limiter": []}, calls
