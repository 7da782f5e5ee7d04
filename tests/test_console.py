"""The operator console (/console) through Flask's test client, against real PostgreSQL and Redis
(and a real worker where the page shows what workers do): sign-in and sessions, who sees what,
CSRF, the admin actions' confirmation step, bad input, 404 pages, and the overview's sources.
"""

from __future__ import annotations

import time
import uuid
from email.utils import parsedate_to_datetime

import flask
import pytest
from redis import Redis

from app import create_app, heartbeats, throughput
from app.registry.traffic import DEFAULT_POLICY
from tests.helpers import (
    REDIS_URL,
    bearer,
    client_for,
    console_client,
    console_post,
    csrf_of,
)

ROW = [6.3, 2.9, 5.6, 1.8]
PAGES = [
    "/console/overview",
    "/console/models",
    "/console/models/console-iris",
    "/console/models/console-iris/versions/1/card",
    "/console/jobs",
    "/console/batch-jobs",
]
ADMIN_PAGES = [
    "/console/keys",
    "/console/models/console-iris/promote?version=2",
    "/console/models/console-iris/rollback",
    "/console/models/console-iris/traffic",
    "/console/models/console-iris/retrain",
    "/console/models/console-iris/drift-check",
]


@pytest.fixture(scope="module")
def two_versions(svc, artifacts):
    """Model "console-iris": v1 (champion) and v2."""
    for _ in range(2):
        svc.registry.register("console-iris", artifacts["iris"])
    return "console-iris"


@pytest.fixture
def admin(app, tokens, two_versions):
    return console_client(app, tokens["admin"])


@pytest.fixture
def predictor(app, tokens, two_versions):
    return console_client(app, tokens["predict"])


def champion(svc, name="console-iris"):
    return svc.registry.describe(name)["aliases"]["champion"]


# -- signing in -------------------------------------------------------------------------


_SAMPLE_ARGUMENTS = {"name": "console-iris", "version": 1, "action": "promote", "job_id": "x",
                     "filename": "htmx.min.js"}  # fmt: skip


def test_with_auth_on_every_console_page_sends_nobody_signed_in_to_sign_in(app, anonymous, two_versions):
    pages = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("console.")]
    open_pages = {"console.sign_in", "console.static"}

    for rule in pages:
        if rule.endpoint in open_pages:
            continue
        url = rule.build({arg: _SAMPLE_ARGUMENTS[arg] for arg in rule.arguments})[1]
        if "GET" in rule.methods:
            answer = anonymous.get(url)
            assert answer.status_code == 302, (url, answer.status_code)
            assert answer.headers["Location"].startswith("/console/sign-in"), url
        if "POST" in rule.methods:  # no form token without a page: refused before anything runs
            assert anonymous.post(url, data={"version": "2"}).status_code in (302, 400), url
    assert len(pages) >= 15, "the console's routes were found"


def test_with_auth_on_nobody_signed_in_is_never_an_admin(app):
    from app.console.blueprint import is_admin

    for path in ("/console/sign-in", "/console/keys", "/console/no-such-page"):
        with app.test_request_context(path):
            assert is_admin() is False, path
    form = app.test_client().get("/console/sign-in")
    assert form.status_code == 200 and "/console/keys" not in form.text


def test_with_auth_off_the_console_treats_its_local_visitor_as_an_admin(settings, two_versions):
    from app.console.blueprint import is_admin

    open_app = create_app(settings.replace(auth_enabled=False))
    with open_app.test_request_context("/console/keys"):
        assert is_admin() is True, "open by design with auth off (the banner says so)"
    keys = open_app.test_client().get("/console/keys")
    assert keys.status_code == 200 and "Auth is off" in keys.text


def test_a_page_without_a_session_goes_to_sign_in(anonymous):
    answer = anonymous.get("/console/models")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/sign-in?next=/console/models")


def test_sign_in_sets_a_signed_httponly_lax_cookie_holding_no_token(app, tokens):
    client = app.test_client()
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": tokens["admin"]}
    )
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP on 127.0.0.1
    assert tokens["admin"] not in cookie
    assert client.get("/console/models").status_code == 200


def test_only_console_requests_open_a_session(app, tokens):
    """The API's requests never build the session's signer nor read its cookie (a cost on every
    prediction): a request elsewhere gets Flask's null session, even one carrying the cookie."""
    client = app.test_client()
    assert _sign_in_from(client, tokens["admin"]).status_code == 303
    cookie = client.get_cookie("predq_console", path="/console")
    assert cookie is not None
    interface, headers = app.session_interface, {"Cookie": f"predq_console={cookie.value}"}

    with app.test_request_context("/console/models", headers=headers):
        console = interface.open_session(app, flask.request)
    with app.test_request_context("/v1/models", headers=headers):
        api = interface.open_session(app, flask.request)

    assert console is not None and "key_id" in console, "the console's request reads its signed-in session"
    assert api is None, "an API request opens no session (Flask gives it a null one)"


def test_behind_tls_the_cookie_is_secure(app, tokens):
    client = app.test_client()
    form = client.get("/console/sign-in", base_url="https://console.example")
    answer = client.post("/console/sign-in", base_url="https://console.example",
                         headers={"Referer": "https://console.example/console/sign-in"},
                         data={"csrf_token": csrf_of(form.text), "api_key": tokens["admin"]})  # fmt: skip
    assert answer.status_code == 303, answer.text
    assert "Secure" in answer.headers["Set-Cookie"]


def test_an_unknown_key_is_refused_with_the_form_again(app):
    client = app.test_client()
    form = client.get("/console/sign-in")
    answer = client.post("/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": "pq_made_up"})
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.text and 'id="api_key"' in answer.text
    assert client.get("/console/models").status_code == 302


def _sign_in_from(client, token: str):
    form = client.get("/console/sign-in")
    return client.post("/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": token})


def _address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"


def test_refused_sign_ins_count_against_the_addresss_failed_key_limit(settings):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    guesser = strict.test_client()
    guesser.environ_base["REMOTE_ADDR"] = _address()

    answers = [_sign_in_from(guesser, f"pq_made-up-{i}") for i in range(5)]

    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429], "the form is limited as the API is"
    assert "Too many attempts" in answers[3].text and int(answers[3].headers["Retry-After"]) >= 1
    assert "WWW-Authenticate" not in answers[3].headers


def test_the_console_and_the_api_share_one_failed_key_count_per_address(settings):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    client = strict.test_client()
    client.environ_base["REMOTE_ADDR"] = _address()

    at_the_api = [client.get("/v1/models", headers=bearer(f"pq_api-{i}")).status_code for i in range(2)]
    at_the_console = [_sign_in_from(client, f"pq_console-{i}").status_code for i in range(2)]
    back_at_the_api = client.get("/v1/models", headers=bearer("pq_api-again")).status_code

    assert at_the_api == [401, 401] and at_the_console == [401, 429] and back_at_the_api == 429


def test_refused_sign_ins_never_lock_a_valid_key_out_of_the_address(settings, tokens, two_versions):
    strict = create_app(settings.replace(auth_failure_limit="3/minute"))
    shared = strict.test_client()  # behind a NAT or an office proxy every caller shares one address
    shared.environ_base["REMOTE_ADDR"] = _address()
    assert [_sign_in_from(shared, f"pq_made-up-{i}").status_code for i in range(4)][-1] == 429

    signed_in = _sign_in_from(shared, tokens["predict"])

    assert signed_in.status_code == 303, "a valid key is never held back by others' refused keys"
    assert shared.get("/console/models").status_code == 200


def test_an_empty_sign_in_is_refused_and_not_counted(settings):
    strict = create_app(settings.replace(auth_failure_limit="1/minute"))
    client = strict.test_client()
    client.environ_base["REMOTE_ADDR"] = _address()

    answers = [_sign_in_from(client, "  ").status_code for _ in range(3)]

    assert answers == [401, 401, 401], "no key typed is not a key refused"


def test_a_sign_in_without_its_csrf_token_is_refused(app, tokens):
    client = app.test_client()
    client.get("/console/sign-in")
    answer = client.post("/console/sign-in", data={"api_key": tokens["admin"]})
    assert answer.status_code == 400 and "nothing changed" in answer.text
    assert client.get("/console/models").status_code == 302


def test_a_revoked_keys_session_ends(app, svc, two_versions):
    _, token = svc.keys.create(f"console-revoked-{uuid.uuid4().hex[:6]}", ["admin"])
    client = console_client(app, token)
    assert client.get("/console/models").status_code == 200
    name = next(k.name for k in svc.keys.list() if k.prefix == token[:10])
    svc.keys.revoke(name)
    answer = client.get("/console/models")
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]


def test_a_revoked_keys_session_ends_at_its_next_request_in_another_process(settings, svc, two_versions):
    # Another API process: its set of active keys is re-read only every minute.
    elsewhere = create_app(settings.replace(auth_cache_seconds=60))
    _, token = svc.keys.create(f"console-revoked-elsewhere-{uuid.uuid4().hex[:6]}", ["admin"])
    client = console_client(elsewhere, token)
    assert client.get("/console/models").status_code == 200

    svc.keys.revoke(next(k.name for k in svc.keys.list() if k.prefix == token[:10]))
    answer = client.get("/console/models")

    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]
    assert elsewhere.test_client().get("/v1/models", headers=bearer(token)).status_code == 200, (
        "the API's bearer check still has it (within AUTH_CACHE_SECONDS): only the console reads the row"
    )


def test_an_expired_session_goes_back_to_sign_in(settings, tokens, two_versions):
    short = create_app(settings.replace(console_session_seconds=1))
    client = console_client(short, tokens["admin"])
    assert client.get("/console/models").status_code == 200
    time.sleep(2.1)
    answer = client.get("/console/models")
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]


def test_a_busy_session_still_ends_its_lifetime_after_the_sign_in(settings, tokens, two_versions):
    lifetime = 3.0
    short = create_app(settings.replace(console_session_seconds=int(lifetime)))
    signed_in_at = time.monotonic()
    client = console_client(short, tokens["admin"])

    while_young = []
    while time.monotonic() - signed_in_at < lifetime - 0.8:  # a page every 0.4 s, as a busy operator
        while_young.append(client.get("/console/models").status_code)
        time.sleep(0.4)
    time.sleep(max(0.0, lifetime + 0.3 - (time.monotonic() - signed_in_at)))
    answer = client.get("/console/models")

    assert len(while_young) >= 3 and set(while_young) == {200}
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"], (
        "use does not extend a sign-in: it lasts CONSOLE_SESSION_SECONDS from the sign-in"
    )


def test_the_session_cookie_expires_with_the_sign_in(app, tokens, two_versions):
    client = app.test_client()
    form = client.get("/console/sign-in")
    before = time.time()
    answer = client.post(
        "/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": tokens["admin"]}
    )
    time.sleep(1.1)  # a cookie sent again would name a later second
    later = [client.get(page) for page in ("/console/models", "/console/overview", "/console/jobs")]

    expires = _cookie_expiry(answer)
    lifetime = app.permanent_session_lifetime.total_seconds()
    assert abs(expires - (before + lifetime)) < 2
    # A page that changes the session (its first CSRF token) sends the cookie again, with the same expiry.
    assert {_cookie_expiry(page) for page in later if "Set-Cookie" in page.headers} <= {expires}
    assert "Set-Cookie" not in later[-1].headers, "a page that changes nothing does not send the cookie"


def _cookie_expiry(answer) -> float:
    return parsedate_to_datetime(answer.headers["Set-Cookie"].split("Expires=")[1].split(";")[0]).timestamp()


def test_sign_out_ends_the_session(admin):
    page = admin.get("/console/overview")
    assert admin.post("/console/sign-out", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert admin.get("/console/overview").status_code == 302


# -- pages --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES + ADMIN_PAGES)
def test_every_page_renders_for_an_admin(admin, path):
    answer = admin.get(path)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.mimetype == "text/html"
    assert "<h1>" in answer.text and "signed in as" in answer.text


def test_the_model_page_shows_versions_aliases_and_audit_trail(admin, svc, two_versions):
    svc.registry.set_alias(two_versions, "challenger", 2, "test", "for the page")
    html = admin.get(f"/console/models/{two_versions}").text
    described = svc.registry.describe(two_versions)
    for version in described["versions"]:
        assert version["sha256"][:12] in html
    assert "challenger" in html and "for the page" in html
    assert f"Worker pool: {described['pool']}." in html


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_a_predict_key_gets_a_403_page_for_admin_pages(predictor, path):
    answer = predictor.get(path)
    assert answer.status_code == 403 and answer.mimetype == "text/html"
    assert "admin" in answer.text


def test_a_predict_keys_admin_actions_change_nothing(predictor, admin, svc, two_versions):
    before = champion(svc)
    token = csrf_of(predictor.get("/console/models").text)
    promote = {
        "csrf_token": token,
        "alias": "champion",
        "version": "2" if before == 1 else "1",
        "confirmed": "yes",
    }
    assert predictor.post(f"/console/models/{two_versions}/promote", data=promote).status_code == 403
    assert (
        predictor.post(
            "/console/keys", data={"csrf_token": token, "name": "sneaky", "scope": "admin"}
        ).status_code
        == 403
    )
    assert champion(svc) == before
    assert "sneaky" not in {k.name for k in svc.keys.list()}
    assert "Keys</a>" not in predictor.get("/console/overview").text  # not even offered


def test_promote_goes_through_a_confirmation_step_then_moves_the_alias(admin, svc, two_versions):
    svc.registry.set_alias(two_versions, "champion", 1, "test", "start")
    page = f"/console/models/{two_versions}/promote?version=2"
    confirm = console_post(admin, page, {"alias": "champion", "version": "2", "reason": "better"})
    assert confirm.status_code == 200 and "Confirm" in confirm.text
    assert champion(svc) == 1  # not yet
    done = admin.post(page.split("?")[0], data={"csrf_token": csrf_of(confirm.text), "alias": "champion",
                                                  "version": "2", "reason": "better", "confirmed": "yes"})  # fmt: skip
    assert done.status_code == 303
    assert champion(svc) == 2
    event = svc.registry.alias_history(two_versions, 1)[0]
    assert event["actor"].startswith("console:test-admin") and event["reason"] == "better"
    rolled = console_post(
        admin, f"/console/models/{two_versions}/rollback", {"alias": "champion", "confirmed": "yes"}
    )
    assert rolled.status_code == 303 and champion(svc) == 1


def test_a_post_without_csrf_changes_nothing(admin, svc, two_versions):
    before = champion(svc)
    answer = admin.post(f"/console/models/{two_versions}/promote",
                        data={"alias": "champion", "version": "2" if before == 1 else "1", "confirmed": "yes"})  # fmt: skip
    assert answer.status_code == 400 and "nothing changed" in answer.text
    assert champion(svc) == before


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"weight_v1": "60", "weight_v2": "30"}, "add up to 90"),
        ({"weight_v1": "50", "weight_v9": "50"}, "Version 9 is not a version"),
        ({"weight_v1": "abc", "weight_v2": "100"}, "number from 0 to 100"),
    ],
)
def test_a_bad_traffic_split_shows_the_error_and_changes_nothing(admin, svc, two_versions, weights, message):
    before = svc.registry.describe(two_versions)["traffic_policy"]
    answer = console_post(admin, f"/console/models/{two_versions}/traffic", {**weights, "confirmed": "yes"})
    assert answer.status_code == 422 and message in answer.text
    assert 'id="weight_v1"' in answer.text  # the form again
    assert svc.registry.describe(two_versions)["traffic_policy"] == before


def test_a_traffic_split_is_confirmed_then_set(admin, svc, two_versions):
    page = f"/console/models/{two_versions}/traffic"
    split = {"weight_v1": "75", "weight_v2": "25", "shadow": ""}
    confirm = console_post(admin, page, split)
    assert "version 1: 75%, version 2: 25%" in confirm.text
    done = admin.post(page, data={"csrf_token": csrf_of(confirm.text), **split, "confirmed": "yes"})
    assert done.status_code == 303
    routes = svc.registry.describe(two_versions)["traffic_policy"]["routes"]
    assert routes == [{"version": 1, "weight": 75.0}, {"version": 2, "weight": 25.0}]
    svc.registry.set_policy(two_versions, DEFAULT_POLICY)  # back to champion only


def test_keys_are_created_shown_once_and_revoked(admin, svc):
    name = f"console-made-{uuid.uuid4().hex[:6]}"
    made = console_post(admin, "/console/keys", {"name": name, "scope": "predict"})
    assert made.status_code == 201
    token = made.text.split('<code id="new-token">')[1].split("</code>")[0]
    assert svc.keys.authenticate(token) is not None
    assert token not in admin.get("/console/keys").text  # never shown again
    assert console_post(admin, f"/console/keys/{name}/revoke", {}).status_code == 303
    assert svc.keys.authenticate(token) is None
    refused = console_post(admin, "/console/keys", {"name": "", "scope": "predict"})
    assert refused.status_code == 422 and "Nothing created" in refused.text


# -- bad addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/console/models/no-such-model",
        "/console/models/console-iris/versions/99/card",
        f"/console/jobs/{uuid.uuid4()}",
        "/console/jobs/not-a-uuid",
        f"/console/batch-jobs/{uuid.uuid4()}/cancel",
        "/console/no-such-page",
    ],
)
def test_an_unknown_thing_in_a_console_url_is_an_html_404(admin, path):
    answer = admin.get(path)
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "<h1>Not found</h1>" in answer.text


@pytest.mark.parametrize("path", ["/v1/models/no-such-model", "/no-such-path"])
def test_the_api_still_answers_json_404s(app, tokens, path):
    answer = client_for(app, tokens["admin"]).get(path)
    assert answer.status_code == 404 and answer.is_json and "error" in answer.json


def test_console_routes_stay_out_of_the_openapi_document(anonymous):
    paths = anonymous.get("/openapi.json").json["paths"]
    assert not [p for p in paths if p.startswith("/console")]


# -- who sees which jobs ----------------------------------------------------------------


def test_a_predict_key_sees_its_own_job_and_not_anothers(app, tokens, predictor, two_versions, worker):
    mine = client_for(app, tokens["predict"]).post(f"/v1/models/{two_versions}/predictions?wait=20",
                                                  json={"inputs": [ROW]}).json  # fmt: skip
    theirs = client_for(app, tokens["admin"]).post(f"/v1/models/{two_versions}/predictions?wait=20",
                                                  json={"inputs": [[5.0, 3.0, 1.6, 0.2]]}).json  # fmt: skip
    page = predictor.get(f"/console/jobs/{mine['id']}")
    assert page.status_code == 200 and "6.3" in page.text and mine["status"] == "succeeded"
    assert '<th scope="row">priority</th><td>normal' in page.text
    assert predictor.get(f"/console/jobs/{theirs['id']}").status_code == 404
    assert mine["id"] in predictor.get("/console/jobs").text


# -- the overview's sources ---------------------------------------------------------------


def test_the_overview_shows_the_workers_heartbeat_and_the_last_hours_jobs(app, tokens, admin, svc, worker,
                                                                            worker_name, two_versions):  # fmt: skip
    before = sum(m["ok"] for _, m in throughput.last_minutes(svc.redis))
    answer = client_for(app, tokens["predict"]).post(f"/v1/models/{two_versions}/predictions?wait=20",
                                                    json={"inputs": [[5.9, 3.0, 5.1, 1.8]]})  # fmt: skip
    assert answer.json["status"] == "succeeded"
    deadline = time.monotonic() + 15
    while not any(w["node"] == worker_name for w in heartbeats.workers(svc.redis, 30)):
        assert time.monotonic() < deadline, "the worker never wrote a heartbeat"
        time.sleep(0.5)
    # Counted right after the worker hands the result over: a moment after the answer.
    while sum(m["ok"] for _, m in throughput.last_minutes(svc.redis)) < before + 1:
        assert time.monotonic() < deadline, "the finished job was not counted"
        time.sleep(0.1)
    html = admin.get("/console/overview").text
    assert worker_name in html and "alive" in html
    deadline = time.monotonic() + 15  # pool processes report what they serve every few seconds
    while 'class="ok"' not in (pool := html.split("<td>default</td>")[1].split("</tr>")[0]):
        assert time.monotonic() < deadline, pool
        time.sleep(0.5)
        html = admin.get("/console/overview").text
    assert "<svg" in html and "jobs succeeded" in html


def test_a_silent_worker_is_shown_as_silent(admin):
    Redis.from_url(REDIS_URL).hset(
        heartbeats.KEY, "gone@nowhere", b'{"queues": ["inference"], "pid": 1, "seen": 1}'
    )
    redis = Redis.from_url(REDIS_URL)
    heartbeats.beat(redis, "quiet@nowhere", ["inference"], now=time.time() - 120)
    html = admin.get("/console/overview").text
    assert "gone@nowhere" not in html  # older than a day: forgotten
    row = html.split("quiet@nowhere")[1].split("</tr>")[0]
    assert "silent" in row
    redis.hdel(heartbeats.KEY, "quiet@nowhere")


# -- auth off -----------------------------------------------------------------------------


def test_with_auth_off_the_console_is_open_on_loopback_only_and_says_so(settings, two_versions):
    open_app = create_app(settings.replace(auth_enabled=False))
    local = open_app.test_client()
    page = local.get("/console/models")
    assert page.status_code == 200 and "Auth is off" in page.text
    remote = open_app.test_client().get("/console/models", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and "127.0.0.1" in remote.text


# -- live quality and the A/B report, summed in SQL -----------------------------------------


def test_quality_and_the_ab_test_from_sql_sums_match_the_apis_per_row_figures(
    admin, app, tokens, svc, two_versions
):
    from sqlalchemy import insert

    from app.console import ab, queries
    from app.db import Feedback

    rows = []
    for version, right in ((1, 31), (2, 42)):  # of 50 rows each: 62% against 84%
        for i in range(50):
            label = 1 if i < right else 2
            rows.append({"job_id": uuid.uuid4(), "model_name": two_versions, "model_version": version, "row": 0,
                         "label": label, "prediction": 1})  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Feedback), rows)
    api = client_for(app, tokens["admin"]).get(f"/v1/models/{two_versions}/ab-report?a=1&b=2").json
    described = svc.registry.describe(two_versions)
    sums = queries.quality_by_model(svc, [described], two_versions)[two_versions]
    assert sums[1]["value"] == pytest.approx(api["a"]["value"]) and sums[1]["n"] == api["a"]["n"] == 50
    assert sums[2]["value"] == pytest.approx(api["b"]["value"])
    mine = ab.report(sums[1], sums[2], svc.settings.ab_min_samples)
    assert f"p = {api['test']['p_value']:.4g}" in mine["verdict"]
    assert "v2 is higher" in mine["verdict"]
    assert "p = " in admin.get(f"/console/models/{two_versions}").text
