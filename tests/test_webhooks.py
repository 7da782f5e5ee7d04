"""Completion webhooks: outbox rows written with results, signed deliveries to a real receiver,
retries from the outbox, the SSRF guard, and the REST routes.

A real worker (the ``worker`` fixture) answers the jobs and writes their outbox rows; the
sender's pass (workers/webhook_sender.py: ``deliver_due``) runs here, against a real HTTP
receiver on 127.0.0.1. Nothing is ever sent outside the loopback range: names that resolve to
private addresses go through a stub resolver, and the tests assert no connection was made.
The end-to-end run with the sender's own Celery worker, SIGKILLed, is in tests/test_faults.py.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import predq
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, update
from standardwebhooks import Webhook, WebhookVerificationError

from app import create_app
from app.db import Job, WebhookDelivery, utcnow
from app.errors import InvalidInput
from app.webhooks.outbox import all_endpoints
from app.webhooks.urls import check_callback_url
from tests.helpers import IRIS_FEATURES, WebhookReceiver, client_for, count_rows, iris_rows
from workers.retention import expire_all
from workers.webhook_sender import REFUSED, deliver_due

ROWS = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def hook_app(settings):
    """The API as a deployment that lets webhooks reach 127.0.0.1 (WEBHOOK_ALLOWED_HOSTS), fast retries."""
    app = create_app(settings.replace(webhook_allowed_hosts="127.0.0.1", webhook_retry_base_seconds=0.2))
    yield app
    app.extensions["predq"].engine.dispose()


@pytest.fixture
def hook_svc(hook_app):
    return hook_app.extensions["predq"]


@pytest.fixture
def tenant(hook_app):
    """A fresh predict key (no webhook secret yet), as a client of ``hook_app``, and its id."""
    principal, token = hook_app.extensions["predq"].keys.create(f"hooks-{uuid.uuid4().hex[:8]}", ["predict"])
    return client_for(hook_app, token), principal.key_id


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


def secret_of(client) -> str:
    answer = client.post("/v1/webhook-secret")
    assert answer.status_code == 201, answer.json
    return answer.json["secret"]


def finished(client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    view = client.get(f"/v1/predictions/{job_id}?wait=20").json
    deadline = time.monotonic() + timeout
    while view["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        view = client.get(f"/v1/predictions/{job_id}?wait=5").json
    assert view["status"] == "succeeded", view
    return view


def delivery_rows(svc, subject: str) -> list[Any]:
    with svc.engine.connect() as conn:
        return list(
            conn.execute(
                select(WebhookDelivery.__table__).where(WebhookDelivery.subject == subject)
            ).mappings()
        )


def due_now(svc, subject: str) -> None:
    """Bring a retry's time forward (the backoff's wait is what the outbox holds; this test skips it)."""
    with svc.engine.begin() as conn:
        conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.subject == subject).values(next_attempt_at=utcnow())
        )


def attempts_counted(event: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("predq_webhook_attempts_total", {"event": event, "outcome": outcome}) or 0.0
    )


# -- the callback of one job ----------------------------------------------------------------


def test_a_callback_is_delivered_signed_with_the_keys_secret_and_carries_the_job(
    tenant, hook_svc, receiver, registered, worker
):
    client, _ = tenant
    secret = secret_of(client)
    submitted = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(3, seed=71).tolist(),
                                                                 "callback_url": receiver.url()})  # fmt: skip
    assert submitted.status_code == 202, submitted.json
    assert submitted.json["webhook"] == {"url": receiver.url(), "state": "waiting", "attempts": 0,
                                         "last_status_code": None}  # fmt: skip
    view = finished(client, submitted.json["id"])
    assert view["webhook"]["state"] == "pending"
    before = attempts_counted("prediction.succeeded", "delivered")

    report = deliver_due(hook_svc)

    assert report.delivered >= 1
    ((headers, body),) = receiver.bodies_to("/hook")
    payload = Webhook(secret).verify(body, headers)  # raises unless the signature is the key's
    assert headers["webhook-id"] == f"msg_{delivery_rows(hook_svc, view['id'])[0]['id'].hex}"
    assert payload["type"] == "prediction.succeeded"
    after = client.get(f"/v1/predictions/{view['id']}").json
    assert payload["data"] == {key: value for key, value in after.items() if key != "webhook"}
    assert after["webhook"] == {
        "url": receiver.url(),
        "state": "delivered",
        "attempts": 1,
        "last_status_code": 200,
    }
    assert attempts_counted("prediction.succeeded", "delivered") == before + 1
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_of(client)).verify(body, headers)  # a rotated secret no longer verifies


def test_the_python_clients_submit_names_a_callback_url_and_the_job_is_delivered_there(
    hook_app, hook_svc, receiver, registered, worker
):
    _, token = hook_svc.keys.create(f"sdk-{uuid.uuid4().hex[:8]}", ["predict"])
    transport = httpx.WSGITransport(app=hook_app)
    with predq.Client("http://predq", token, timeout=30, transport=transport) as sdk:
        secret = client_for(hook_app, token).post("/v1/webhook-secret").json["secret"]
        job = sdk.submit("iris", iris_rows(2, seed=72).tolist(), callback_url=receiver.url())
        assert (job.view["webhook"] or {}).get("url") == receiver.url(), "the client sent no callback_url"
        job.result()

    deliver_due(hook_svc)

    ((headers, body),) = receiver.bodies_to("/hook")
    payload = Webhook(secret).verify(body, headers)
    assert payload["data"]["id"] == job.id, "the delivery is not the job the client submitted"


def test_a_job_answered_from_the_cache_writes_its_outbox_row_with_its_own(
    tenant, hook_svc, receiver, registered, worker
):
    client, _ = tenant
    secret = secret_of(client)
    rows = iris_rows(2, seed=72).tolist()
    finished(client, client.post("/v1/models/iris/predictions", json={"inputs": rows}).json["id"])

    cached = client.post("/v1/models/iris/predictions", json={"inputs": rows, "callback_url": receiver.url()})

    assert cached.status_code == 200, cached.json  # every row cached: finished at submit
    assert [row["state"] for row in delivery_rows(hook_svc, cached.json["id"])] == ["pending"]
    deliver_due(hook_svc)
    ((headers, body),) = receiver.bodies_to("/hook")
    assert Webhook(secret).verify(body, headers)["data"]["id"] == cached.json["id"]


def test_a_failing_receiver_is_retried_from_the_outbox_with_the_same_webhook_id_and_body(
    tenant, hook_svc, registered, worker
):
    client, _ = tenant
    secret = secret_of(client)
    with WebhookReceiver(lambda elapsed, path: 500 if len(receiver.received) < 2 else 204) as receiver:
        job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=73).tolist(),
                                                               "callback_url": receiver.url()}).json  # fmt: skip
        finished(client, job["id"])
        deliver_due(hook_svc)
        (row,) = delivery_rows(hook_svc, job["id"])
        assert (row["state"], row["attempts"], row["last_status_code"]) == ("pending", 1, 500)
        assert row["next_attempt_at"] > utcnow(), "the retry waits for its backoff, kept in the outbox"
        assert deliver_due(hook_svc).delivered == 0, "not due yet: nothing sent"
        for _ in range(2):
            due_now(hook_svc, job["id"])
            deliver_due(hook_svc)
        sent = receiver.bodies_to("/hook")

    assert len(sent) == 3
    assert len({headers["webhook-id"] for headers, _ in sent}) == 1
    assert len({body for _, body in sent}) == 1
    for headers, body in sent:
        Webhook(secret).verify(body, headers)
    (row,) = delivery_rows(hook_svc, job["id"])
    assert (row["state"], row["attempts"], row["last_status_code"]) == ("delivered", 3, 204)


def test_after_the_last_attempt_a_delivery_is_failed(tenant, hook_svc, registered, worker):
    client, _ = tenant
    secret_of(client)
    svc = dataclasses.replace(hook_svc, settings=hook_svc.settings.replace(webhook_max_attempts=2))
    with WebhookReceiver(lambda elapsed, path: 503) as receiver:
        job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=74).tolist(),
                                                               "callback_url": receiver.url()}).json  # fmt: skip
        finished(client, job["id"])
        deliver_due(svc)
        due_now(svc, job["id"])
        deliver_due(svc)
        due_now(svc, job["id"])
        deliver_due(svc)
        assert len(receiver.received) == 2
    view = client.get(f"/v1/predictions/{job['id']}").json
    assert view["webhook"] == {
        "url": receiver.url(),
        "state": "failed",
        "attempts": 2,
        "last_status_code": 503,
    }


def test_redirects_are_not_followed(tenant, hook_svc, registered, worker):
    client, _ = tenant
    secret_of(client)
    with WebhookReceiver(lambda elapsed, path: 302) as receiver:
        job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=75).tolist(),
                                                               "callback_url": receiver.url()}).json  # fmt: skip
        finished(client, job["id"])
        deliver_due(hook_svc)
        assert [path for path, _, _ in receiver.received] == ["/hook"], "the Location was not followed"
    (row,) = delivery_rows(hook_svc, job["id"])
    assert row["last_status_code"] == 302 and "redirects are not followed" in row["last_error"]


def test_a_body_beyond_the_limit_carries_a_link_instead_of_the_outputs(
    tenant, hook_svc, receiver, registered, worker
):
    client, _ = tenant
    secret = secret_of(client)
    settings = hook_svc.settings.replace(webhook_max_body_bytes=300, public_url="https://predq.example")
    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(20, seed=76).tolist(),
                                                           "callback_url": receiver.url()}).json  # fmt: skip
    finished(client, job["id"])

    deliver_due(dataclasses.replace(hook_svc, settings=settings))

    ((headers, body),) = receiver.bodies_to("/hook")
    data = Webhook(secret).verify(body, headers)["data"]
    assert data["outputs"] is None
    assert data["outputs_url"] == f"https://predq.example/v1/predictions/{job['id']}"


# -- the SSRF guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,why",
    [
        ("ftp://example.com/hook", "matching regex '^[Hh][Tt][Tt][Pp][Ss]?://'"),  # msgspec's words
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://example.com/" + "a" * 2048, "length <= 2048"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://127.1/hook", "loopback"),
        ("http://0x7f.1/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://[::ffff:192.168.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[fec0::1]/hook", "site-local"),
        ("http://[2002:a9fe:a9fe::]/hook", "link-local"),  # 6to4 around 169.254.169.254
    ],
)
def test_a_callback_url_refused_at_submit_stores_nothing(client, svc, settings, registered, url, why):
    secret_of(client)
    jobs = count_rows(svc, Job)

    answer = client.post("/v1/models/iris/predictions", json={"inputs": ROWS, "callback_url": url})

    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["code"] == "invalid_input"
    assert why in answer.json["error"]["details"]["fields"]["callback_url"][0]
    assert count_rows(svc, Job) == jobs


def test_the_allow_list_lets_hosts_through_as_written():
    assert check_callback_url("http://127.0.0.1:8080/hook", frozenset({"127.0.0.1"}))
    with pytest.raises(InvalidInput):
        check_callback_url("http://127.0.0.2/hook", frozenset({"127.0.0.1"}))


def test_an_arrow_submit_takes_its_callback_url_in_the_query_string(tenant, hook_svc, receiver, registered):
    import pyarrow as pa

    from tests.helpers import IRIS_FEATURES, arrow_body

    client, _ = tenant
    secret_of(client)
    table = pa.table(
        {name: [value] for name, value in zip(IRIS_FEATURES, iris_rows(1, seed=77)[0], strict=True)}
    )
    bad = client.post("/v1/models/iris/predictions?callback_url=http://10.0.0.1/x", data=arrow_body(table),
                      content_type="application/vnd.apache.arrow.stream")  # fmt: skip
    assert bad.status_code == 422, bad.json
    good = client.post(f"/v1/models/iris/predictions?callback_url={receiver.url()}", data=arrow_body(table),
                       content_type="application/vnd.apache.arrow.stream")  # fmt: skip
    assert good.status_code == 202, good.json
    assert good.json["webhook"]["url"] == receiver.url()


def test_a_callback_needs_a_secret_to_sign_it(tenant, svc, registered):
    client, _ = tenant
    jobs = count_rows(svc, Job)
    answer = client.post(
        "/v1/models/iris/predictions", json={"inputs": ROWS, "callback_url": "https://example.com/h"}
    )
    assert answer.status_code == 422
    assert answer.json["error"]["code"] == "webhook_secret_missing"
    assert count_rows(svc, Job) == jobs


def _stub_resolver(answers: dict[str, str]):
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return [answers[host]]

    return resolve, asked


@pytest.mark.parametrize("address", ["10.20.30.40", "169.254.169.254", "192.168.1.1", "fd00:ec2::254"])
def test_a_name_that_resolves_to_a_private_address_is_refused_at_send_time_with_no_connection(
    tenant, hook_svc, registered, worker, address
):
    client, _ = tenant
    secret_of(client)
    url = "http://hooks.internal.test/x"
    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=sum(map(ord, address))).tolist(),
                                                           "callback_url": url}).json  # fmt: skip
    assert job["webhook"]["state"] == "waiting", "a name is accepted at submit: it resolves at send time"
    finished(client, job["id"])
    resolve, asked = _stub_resolver({"hooks.internal.test": address})
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(200))

    deliver_due(hook_svc, resolver=resolve, transport=transport)

    assert asked == ["hooks.internal.test"]
    # (The pass also sends what earlier tests left due: those go to 127.0.0.1.)
    assert [r for r in requests if r.url.host != "127.0.0.1"] == [], "no connection was attempted"
    (row,) = delivery_rows(hook_svc, job["id"])
    assert row["state"] == "failed" and row["last_error"] == REFUSED
    assert address not in row["last_error"], "a key's delivery list must not map internal names"


def test_a_name_that_resolves_to_loopback_reaches_no_receiver(tenant, hook_svc, receiver, registered, worker):
    client, _ = tenant
    secret_of(client)
    url = f"http://looks-public.test:{receiver.port}/hook"
    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=79).tolist(),
                                                           "callback_url": url}).json  # fmt: skip
    finished(client, job["id"])
    resolve, _ = _stub_resolver({"looks-public.test": "127.0.0.1"})

    deliver_due(hook_svc, resolver=resolve)

    assert receiver.connections == 0 and receiver.received == []
    (row,) = delivery_rows(hook_svc, job["id"])
    assert row["state"] == "failed" and row["last_error"] == REFUSED


def test_a_public_name_connects_to_the_address_that_was_checked(tenant, hook_svc, registered, worker):
    client, _ = tenant
    secret = secret_of(client)
    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=80).tolist(),
                                                           "callback_url": "https://hooks.example.com/in"}).json  # fmt: skip
    finished(client, job["id"])
    resolve, _ = _stub_resolver({"hooks.example.com": "93.184.215.14"})
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(200))

    deliver_due(hook_svc, resolver=resolve, transport=transport)

    (request,) = [r for r in requests if r.url.host != "127.0.0.1"]  # not what earlier tests left due
    assert request.url.host == "93.184.215.14" and request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    Webhook(secret).verify(request.content, dict(request.headers))


# -- registered endpoints -------------------------------------------------------------------


def test_an_endpoint_hears_of_its_keys_jobs_and_lists_its_deliveries(
    tenant, hook_app, hook_svc, svc, tokens, receiver, registered, worker
):
    client, _ = tenant
    created = client.post(
        "/v1/webhooks", json={"url": receiver.url("/endpoint"), "events": ["prediction.succeeded"]}
    )
    assert created.status_code == 201, created.json
    endpoint = created.json
    assert endpoint["secret"].startswith("whsec_")
    listed = client.get("/v1/webhooks").json["webhooks"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    time.sleep(svc.settings.auth_cache_seconds + 0.5)  # the worker's endpoint cache re-reads them

    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=81).tolist()}).json
    finished(client, job["id"])
    deliver_due(hook_svc)

    ((headers, body),) = receiver.bodies_to("/endpoint")
    assert Webhook(endpoint["secret"]).verify(body, headers)["data"]["id"] == job["id"]
    deliveries = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json["deliveries"]
    assert [(d["subject"], d["state"], d["attempts"], d["last_status_code"]) for d in deliveries] == [
        (job["id"], "delivered", 1, 200)
    ]
    path = f"/v1/webhooks/{endpoint['id']}/deliveries/{deliveries[0]['id']}/redeliver"
    assert client.post(path).status_code == 403, "redelivery is for admin keys"
    again = client_for(hook_app, tokens["admin"]).post(path)
    assert again.status_code == 202 and again.json["state"] == "pending"
    deliver_due(hook_svc)
    sent = receiver.bodies_to("/endpoint")
    assert len(sent) == 2 and sent[0][0]["webhook-id"] == sent[1][0]["webhook-id"] == deliveries[0]["id"]

    assert client.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
    assert client.get("/v1/webhooks").json["webhooks"] == []


def test_a_revoked_keys_endpoints_hear_of_nothing_more(hook_app, hook_svc):
    name = f"gone-{uuid.uuid4().hex[:8]}"
    principal, token = hook_svc.keys.create(name, ["predict"])
    created = client_for(hook_app, token).post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["model.promoted"]}
    )
    assert created.status_code == 201, created.json
    with hook_svc.engine.connect() as conn:
        assert created.json["id"] in {str(e.id) for e in all_endpoints(conn)}

    hook_svc.keys.revoke(name)

    with hook_svc.engine.connect() as conn:
        assert created.json["id"] not in {str(e.id) for e in all_endpoints(conn)}, (
            "a revoked key's endpoint would still hear every promotion and drift report"
        )


def test_another_keys_endpoint_is_not_found(tenant, hook_svc, hook_app):
    client, _ = tenant
    endpoint = client.post(
        "/v1/webhooks", json={"url": "https://example.com/h", "events": ["model.promoted"]}
    ).json
    _, token = hook_svc.keys.create(f"hooks-other-{uuid.uuid4().hex[:8]}", ["predict"])
    other = client_for(hook_app, token)
    for answer in (
        other.delete(f"/v1/webhooks/{endpoint['id']}"),
        other.get(f"/v1/webhooks/{endpoint['id']}/deliveries"),
    ):
        assert answer.status_code == 404 and answer.json["error"]["code"] == "webhook_not_found"
    assert other.get("/v1/webhooks").json["webhooks"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.com/h", "events": ["prediction.exploded"]},
        {"url": "https://example.com/h", "events": []},
        {"url": "http://192.168.0.10/h", "events": ["prediction.failed"]},
        {"url": "gopher://example.com/h", "events": ["prediction.failed"]},
    ],
)
def test_a_bad_endpoint_is_refused_and_nothing_stored(tenant, body):
    client, _ = tenant
    answer = client.post("/v1/webhooks", json=body)
    assert answer.status_code == 422, answer.json
    assert client.get("/v1/webhooks").json["webhooks"] == []


def test_with_auth_off_the_server_wide_secret_signs_callbacks(settings, registered, worker, receiver):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    app = create_app(
        settings.replace(auth_enabled=False, webhook_secret=secret, webhook_allowed_hosts="127.0.0.1")
    )
    client = app.test_client()
    assert client.post("/v1/webhook-secret").status_code == 409
    job = client.post("/v1/models/iris/predictions", json={"inputs": iris_rows(1, seed=82).tolist(),
                                                           "callback_url": receiver.url()}).json  # fmt: skip
    finished(client, job["id"])
    deliver_due(app.extensions["predq"])
    ((headers, body),) = receiver.bodies_to("/hook")
    assert Webhook(secret).verify(body, headers)["data"]["id"] == job["id"]
    unsigned = create_app(settings.replace(auth_enabled=False)).test_client()
    refused = unsigned.post(
        "/v1/models/iris/predictions", json={"inputs": ROWS, "callback_url": "https://example.com/h"}
    )
    assert refused.status_code == 422 and refused.json["error"]["code"] == "webhook_secret_missing"


# -- retention ------------------------------------------------------------------------------


def test_the_sweeper_deletes_sent_deliveries_past_retention_and_keeps_pending_ones(svc):
    old = utcnow() - timedelta(seconds=svc.settings.webhook_retention_seconds + 60)
    rows = [
        {"id": uuid.uuid4(), "dedup_key": f"retention-{state}-{uuid.uuid4().hex}", "event": "prediction.succeeded",
         "subject": f"retention-{state}", "url": "https://example.com/h", "state": state, "attempts": 1,
         "next_attempt_at": utcnow() + timedelta(days=1), "last_attempt_at": old, "created_at": old}
        for state in ("delivered", "failed", "pending")
    ]  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(WebhookDelivery), rows)

    assert expire_all(svc)["webhook_deliveries"] >= 2

    with svc.engine.connect() as conn:
        left = conn.execute(
            select(WebhookDelivery.state).where(WebhookDelivery.subject.like("retention-%"))
        ).scalars()
        assert list(left) == ["pending"]


# -- the other events -----------------------------------------------------------------------


@pytest.fixture
def model_events(tenant, receiver):
    """An endpoint of ``tenant`` for the model events, and its secret."""
    client, _ = tenant
    created = client.post(
        "/v1/webhooks", json={"url": receiver.url("/models"), "events": ["model.promoted", "drift.detected"]}
    )
    assert created.status_code == 201, created.json
    yield created.json["secret"]
    client.delete(f"/v1/webhooks/{created.json['id']}")


def test_a_promotion_and_a_drift_report_are_announced_with_what_they_record(
    hook_app, hook_svc, tokens, artifacts, receiver, model_events
):
    import pandas as pd
    from sklearn.datasets import load_iris

    from app.lifecycle.drift import check_model
    from tests.helpers import insert_queued_job

    name = f"hooked-{uuid.uuid4().hex[:6]}"
    reference = load_iris(as_frame=True).data
    hook_svc.registry.register(name, artifacts["iris"], reference=pd.DataFrame(reference))
    admin = client_for(hook_app, tokens["admin"])
    assert admin.put(f"/v1/models/{name}/aliases/challenger", json={"version": 1}).status_code == 200
    shifted = (reference.to_numpy() + 3.0).round(3).tolist()
    for start in range(0, 150, 50):
        insert_queued_job(hook_svc, name, shifted[start : start + 50])
    report = check_model(
        dataclasses.replace(hook_svc, settings=hook_svc.settings.replace(drift_min_rows=100)), name
    )
    assert report["status"] == "drift"
    with hook_svc.engine.begin() as conn:  # not for the sweeper to re-queue
        conn.execute(update(Job).where(Job.model_name == name).values(status="failed", completed_at=utcnow()))

    deliver_due(hook_svc)

    got = [Webhook(model_events).verify(body, headers) for headers, body in receiver.bodies_to("/models")]
    mine = [p for p in got if p["data"]["model"]["name"] == name]
    promoted = [p["data"] for p in mine if p["type"] == "model.promoted"]
    # Registration points champion at v1 (a move too), then the admin's challenger move.
    assert sorted((d["alias"], d["to_version"]) for d in promoted) == [("challenger", 1), ("champion", 1)]
    (drifted,) = [p["data"] for p in mine if p["type"] == "drift.detected"]
    assert drifted["report_id"] == report["id"] and drifted["drifted_share"] == report["drifted_share"]


def test_a_batch_job_announces_its_end_to_its_callback(tenant, hook_svc, receiver, registered, bulk_worker):
    import io

    client, _ = tenant
    secret = secret_of(client)
    rows = iris_rows(30, seed=83)
    csv = "\n".join([",".join(IRIS_FEATURES)] + [",".join(map(str, row)) for row in rows]).encode()
    submitted = client.post(
        "/v1/models/iris/batch-jobs",
        data={"file": (io.BytesIO(csv), "rows.csv"), "callback_url": receiver.url("/batch")},
        content_type="multipart/form-data",
    )
    assert submitted.status_code == 202, submitted.json
    deadline = time.monotonic() + 60
    while client.get(f"/v1/batch-jobs/{submitted.json['id']}").json["status"] != "succeeded":
        assert time.monotonic() < deadline, "the batch job did not finish"
        time.sleep(0.2)

    deliver_due(hook_svc)

    ((headers, body),) = receiver.bodies_to("/batch")
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "batch_job.finished"
    assert payload["data"]["id"] == submitted.json["id"] and payload["data"]["status"] == "succeeded"
    assert payload["data"]["rows_total"] == 30


def test_a_job_past_its_deadline_announces_prediction_expired(tenant, hook_svc, receiver, registered):
    from tests.helpers import insert_queued_job
    from workers.sweeper import expire_overdue_jobs

    client, owner = tenant
    secret = secret_of(client)
    job_id = insert_queued_job(hook_svc, "iris", ROWS, owner=owner)  # as if Redis lost its rows
    with hook_svc.engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(callback_url=receiver.url("/expired"), deadline=utcnow() - timedelta(seconds=1))
        )

    assert expire_overdue_jobs(hook_svc) >= 1
    deliver_due(hook_svc)

    ((headers, body),) = receiver.bodies_to("/expired")
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "prediction.expired"
    assert payload["data"]["status"] == "expired" and payload["data"]["error"]["code"] == "deadline_exceeded"
    view = client.get(f"/v1/predictions/{job_id}").json
    assert view["webhook"]["state"] == "delivered"
