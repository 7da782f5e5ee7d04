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


def test_a_key_created_elsewhere_works_within_the_cache_time(settings, svc, registered):
    app = create_app(settings.replace(auth_cache_seconds=0.5))
    http = app.test_client()
    assert http.get("/v1/models/iris", headers=bearer("pq_made-up")).status_code == 401  # the set is loaded
    _, token = svc.keys.create(f"created-elsewhere-{uuid.uuid4().hex[:6]}", ["predict"])  # another process

    time.sleep(0.6)

    assert http.get("/v1/models/iris", headers=bearer(token)).status_code == 200


def test_made_up_tokens_cost_no_database_query(svc):
    keys = ApiKeys(svc.engine, cache_seconds=60)
    _, good = svc.keys.create(f"beside-refused-{uuid.uuid4().hex[:6]}", ["predict"])
    assert keys.authenticate(good) is not None  # the first request reads the set of active keys
    lookups = _count_key_queries(svc.engine)

    with lookups:
        refused = [keys.authenticate(f"pq_made-up-{i}") for i in range(200)]
        known = keys.authenticate(good)

    assert refused == [None] * 200
    assert known is not None and known.name.startswith("beside-refused")
    assert lookups.statements == [], "neither a made-up token nor a known key queried the database"


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


class _count_key_queries:
    """Within the block, the statements on ``engine`` that read api_keys to look a token up (not
    those that join it for another reason, such as which webhook endpoints belong to live keys)."""

    def __init__(self, engine) -> None:
        self.engine, self.statements = engine, []

    def _count(self, conn, cursor, statement, *args) -> None:
        if "FROM api_keys" in statement or "UPDATE api_keys" in statement:
            self.statements.append(statement)

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def _address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"


def test_made_up_tokens_from_an_address_never_lock_out_its_valid_keys(settings, svc, registered):
    # Behind a NAT or an office proxy every caller shares one address.
    strict = create_app(settings.replace(auth_failure_limit="20/minute", auth_cache_seconds=60))
    _, predict = svc.keys.create(f"shared-address-{uuid.uuid4().hex[:6]}", ["predict"])
    _, admin = svc.keys.create(f"shared-address-admin-{uuid.uuid4().hex[:6]}", ["admin"])
    shared = strict.test_client()
    shared.environ_base["REMOTE_ADDR"] = _address()
    assert shared.get("/v1/models", headers=bearer("pq_first")).status_code == 401  # the set is loaded

    with _count_key_queries(strict.extensions["predq"].engine) as lookups:
        answers = [
            shared.get("/v1/models", headers=bearer(f"pq_made-up-{i}")).status_code for i in range(200)
        ]
        as_predict = shared.post("/v1/models/iris/predictions", json=ROW, headers=bearer(predict))
        as_admin = shared.put("/v1/models/iris/aliases/champion", json={"version": 1}, headers=bearer(admin))

    assert answers[:19] == [401] * 19 and set(answers[19:]) == {429}, (
        "the made-up tokens themselves are limited"
    )
    assert as_predict.status_code in (200, 202), as_predict.json
    assert as_admin.status_code == 200, as_admin.json
    assert lookups.statements == [], "no token, made up or valid, cost a database query"


def test_a_refused_key_gets_429_with_retry_after_once_its_address_spent_the_limit(settings, svc):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    guesser, neighbour = strict.test_client(), strict.test_client()
    guesser.environ_base["REMOTE_ADDR"] = _address()

    answers = [guesser.get("/v1/models", headers=bearer(f"pq_made-up-{i}")) for i in range(5)]
    from_elsewhere = neighbour.get("/v1/models", headers=bearer("pq_made-up-elsewhere"))

    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert answers[3].json["error"]["code"] == "rate_limited" and int(answers[3].headers["Retry-After"]) >= 1
    assert from_elsewhere.status_code == 401, "another address is not held"


def _guess_from(http, forwarded_for: list[str]) -> list[int]:
    return [
        http.get("/v1/models", headers={**bearer(f"pq_guess-{i}"), "X-Forwarded-For": hops}).status_code
        for i, hops in enumerate(forwarded_for)
    ]


def test_x_forwarded_for_is_ignored_by_default(settings):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    client = strict.test_client()
    client.environ_base["REMOTE_ADDR"] = _address()

    # A client claiming a new address on every request is still one address.
    answers = _guess_from(client, [_address() for _ in range(5)])

    assert answers == [401, 401, 401, 429, 429]


def test_behind_one_trusted_proxy_the_client_is_the_address_it_appended(settings):
    strict = create_app(settings.replace(auth_failure_limit="3/minute", trusted_proxies=1))
    proxy = strict.test_client()
    proxy.environ_base["REMOTE_ADDR"] = _address()  # every request comes through the proxy
    client, other = _address(), _address()

    # The client makes up a first hop each time; the proxy appends the address it saw.
    spoofed = _guess_from(proxy, [f"{_address()}, {client}" for _ in range(5)])
    from_other = _guess_from(proxy, [other])

    assert spoofed == [401, 401, 401, 429, 429], "spoofed extra hops give the client no new address"
    assert from_other == [401], "another client behind the same proxy is not held"
