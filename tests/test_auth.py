"""API keys: required on /v1, stored hashed, scoped, revocable, managed by the CLI."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from sqlalchemy import event, select

from app import create_app
from app.access.auth import ApiKeys
from app.db import ApiKey
from tests.helpers import bearer, client_for, count_jobs, predq_keys

ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer pq_not-a-key-anyone-was-given"},
    ],
    ids=["no header", "empty bearer", "basic scheme", "unknown key"],
)
def test_a_request_without_a_valid_key_gets_401_and_writes_nothing(anonymous, svc, registered, headers):
    jobs_before, keys_before = count_jobs(svc), predq_keys(svc)

    response = anonymous.post("/v1/models/iris/predictions", json=ROW, headers=headers)

    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_jobs(svc) == jobs_before and predq_keys(svc) == keys_before


def test_every_v1_endpoint_needs_a_key_but_health_and_docs_do_not(anonymous):
    for path in ("/v1/models", "/v1/models/iris", "/v1/predictions/00000000-0000-0000-0000-000000000000"):
        assert anonymous.get(path).status_code == 401, path
    for path in ("/healthz", "/openapi.json"):
        assert anonymous.get(path).status_code == 200, path


def test_a_predict_key_may_predict_but_not_change_aliases(client, registered, worker):
    assert client.post("/v1/models/iris/predictions?wait=20", json=ROW).status_code == 200

    response = client.put("/v1/models/iris/aliases/champion", json={"version": 1})

    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert response.json["error"]["details"]["required_scope"] == "admin"


def test_an_admin_key_moves_an_alias_and_serving_follows(app, svc, tokens, artifacts, worker):
    admin = client_for(app, tokens["admin"])
    svc.registry.register("promoted_by_admin", artifacts["iris"])
    svc.registry.register("promoted_by_admin", artifacts["iris"])

    response = admin.put("/v1/models/promoted_by_admin/aliases/champion", json={"version": 2})

    assert response.status_code == 200, response.json
    assert response.json["aliases"]["champion"] == 2
    served = admin.post("/v1/models/promoted_by_admin/predictions?wait=20", json=ROW).json
    assert served["model"]["version"] == 2, "this process cleared its cache on the change"
    assert admin.put("/v1/models/promoted_by_admin/aliases/champion", json={"version": 9}).status_code == 404
    assert (
        admin.put("/v1/models/promoted_by_admin/aliases/" + "x" * 101, json={"version": 1}).status_code == 422
    )


def test_only_the_tokens_hash_is_stored(svc):
    principal, token = svc.keys.create("hashed-check", ["predict"])

    with svc.engine.connect() as conn:
        row = conn.execute(select(ApiKey.__table__).where(ApiKey.id == principal.key_id)).mappings().one()

    assert row["key_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(v) for v in row.values()}
    assert token.startswith(row["prefix"]) and len(row["prefix"]) < len(token) // 3


def test_a_revoked_key_stops_working_within_the_cache_time(settings, svc, registered):
    app = create_app(settings.replace(auth_cache_seconds=0.2))
    _, token = svc.keys.create("soon-revoked", ["predict"])
    http = client_for(app, token)
    assert http.get("/v1/models/iris").status_code == 200

    svc.keys.revoke("soon-revoked")
    time.sleep(0.3)

    response = http.get("/v1/models/iris")
    assert response.status_code == 401
    assert "revoked" in response.json["error"]["message"]


def test_a_refused_token_is_looked_up_once_per_cache_time_and_known_keys_still_work(svc):
    keys = ApiKeys(svc.engine, cache_seconds=60)
    _, good = svc.keys.create("beside-refused", ["predict"])
    lookups: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "api_keys" in statement:
            lookups.append(statement)

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        refused = [keys.authenticate("pq_made-up") for _ in range(5)]
        known = [keys.authenticate(good) for _ in range(3)]
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)

    assert refused == [None] * 5
    assert all(p is not None and p.name == "beside-refused" for p in known)
    assert len(lookups) == 2, "one lookup for the made-up token, one for the real key"


def test_the_cli_creates_lists_and_revokes_keys(app):
    runner = app.test_cli_runner()

    created = runner.invoke(args=["keys", "create", "from-cli", "--scope", "predict", "--scope", "admin"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert (
        client_for(app, token).put("/v1/models/nope/aliases/champion", json={"version": 1}).status_code == 404
    )

    listed = runner.invoke(args=["keys", "list"])
    assert "from-cli" in listed.output and "admin,predict" in listed.output
    assert token not in listed.output

    assert runner.invoke(args=["keys", "create", "from-cli"]).exit_code != 0, "names are unique"
    assert runner.invoke(args=["keys", "create", "bad", "--scope", "root"]).exit_code != 0
    assert runner.invoke(args=["keys", "create", "bad", "--rate-limit", "lots"]).exit_code != 0
    too_long = runner.invoke(args=["keys", "create", "x" * 101])
    assert too_long.exit_code != 0 and "1 to 100 printable characters" in too_long.output

    assert runner.invoke(args=["keys", "revoke", "from-cli"]).exit_code == 0
    assert runner.invoke(args=["keys", "revoke", "never-made"]).exit_code != 0


def test_auth_off_lets_anonymous_requests_through(settings, registered):
    open_app = create_app(settings.replace(auth_enabled=False))

    assert open_app.test_client().get("/v1/models/iris", headers=bearer("ignored")).status_code == 200
    assert open_app.test_client().get("/v1/models/iris").status_code == 200


def test_an_address_presenting_made_up_keys_gets_429_before_any_lookup(settings, svc):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    engine = strict.extensions["predq"].engine
    _, good = svc.keys.create(f"beside-guessing-{uuid.uuid4().hex[:6]}", ["predict"])
    guesser, neighbour = strict.test_client(), strict.test_client()
    guesser.environ_base["REMOTE_ADDR"] = f"10.{uuid.uuid4().int % 250}.7.7"
    lookups: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "api_keys" in statement:
            lookups.append(statement)

    assert guesser.get("/v1/models", headers=bearer(good)).status_code == 200  # now cached here
    event.listen(engine, "before_cursor_execute", count)
    try:
        answers = [guesser.get("/v1/models", headers=bearer(f"pq_made-up-{i}")) for i in range(5)]
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert answers[3].json["error"]["code"] == "rate_limited" and int(answers[3].headers["Retry-After"]) >= 1
    assert len(lookups) == 3, "no lookup once the address has spent its refused keys"
    assert guesser.get("/v1/models", headers=bearer(good)).status_code == 200, (
        "a key cached before still works"
    )
    _, fresh = svc.keys.create(f"beside-guessing-{uuid.uuid4().hex[:6]}", ["predict"])
    assert neighbour.get("/v1/models", headers=bearer(fresh)).status_code == 200, (
        "another address is not held"
    )
