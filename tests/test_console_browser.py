"""The console in a real headless Chromium with no route to the internet, against the API under
granian, a real worker and a real bulk worker: sign in, every page with no JavaScript error and
no critical accessibility violation (axe-core), promote and roll back from the page, cancel a
running batch job, a predict key's 403s, a post without its CSRF token.

Screenshots of each page land in docs/console/ (the README shows two of them).
"""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import httpx
import joblib
import pyarrow.csv as pa_csv
import pytest
from axe_playwright_python.sync_playwright import Axe
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import insert, select

from app.db import Feedback, Job
from app.lifecycle import drift
from scripts.local import ROOT
from tests.helpers import arrow_table, bearer, iris_rows
from tests.slow_model import slow_identity

SHOTS = ROOT / "docs" / "console"
MODEL, SLOW = "browser-iris", "browser-slow"
ROW = [6.1, 2.8, 4.7, 1.2]


@pytest.fixture(scope="module")
def stack(api_server, worker, bulk_worker, svc, registered, artifacts, tokens, tmp_path_factory):
    """Two versions of an iris forest (labels for them, drift checks), a slow model for batch jobs, served jobs."""
    reference = iris_rows(300, 11)
    for accuracy in (0.94, 0.96):
        svc.registry.register(MODEL, artifacts["iris"], metrics={"accuracy": accuracy}, reference=reference)
    x, y = load_iris(return_X_y=True)
    slow = make_pipeline(
        FunctionTransformer(slow_identity), RandomForestClassifier(n_estimators=5, random_state=0)
    )
    path = tmp_path_factory.mktemp("slow") / "slow.joblib"
    joblib.dump(slow.fit(x, y), path)
    svc.registry.register(SLOW, path)
    with httpx.Client(base_url=api_server, headers=bearer(tokens["predict"]), timeout=30) as http:
        for seed in range(12):  # 240 rows: enough for a drift check's window
            rows = iris_rows(20, seed).tolist()
            assert (
                http.post(f"/v1/models/{MODEL}/predictions?wait=20", json={"inputs": rows}).status_code == 200
            )
    # What the pages show beyond versions: labels for live quality, drift checks.
    labels = [{"job_id": uuid.uuid4(), "model_name": MODEL, "model_version": 1 + i % 2, "row": 0,
               "label": 0 if i % (3 + 4 * (i % 2)) else 1, "prediction": 0} for i in range(400)]  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Feedback), labels)
    for _ in range(3):
        drift.check_model(svc, MODEL)
    return api_server


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/console/overview")
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/overview")


def critical_violations(page: Any) -> list[str]:
    results = Axe().run(page)
    return [v["id"] for v in results.response["violations"] if v["impact"] == "critical"]


def served_version(base: str, token: str) -> int:
    answer = httpx.post(f"{base}/v1/models/{MODEL}/predictions?wait=20", json={"inputs": [ROW]},
                        headers=bearer(token), timeout=30)  # fmt: skip
    return int(answer.json()["model"]["version"])


def test_every_page_renders_with_no_error_and_no_critical_accessibility_violation(
    stack, offline_page, svc, tokens
):
    page, problems = offline_page
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, stack, tokens["admin"])
    with svc.engine.connect() as conn:
        job_id = conn.execute(select(Job.id).where(Job.model_name == MODEL).limit(1)).scalar_one()
    pages = {
        "overview": "/console/overview",
        "models": "/console/models",
        "model": f"/console/models/{MODEL}",
        "card": f"/console/models/{MODEL}/versions/1/card",
        "jobs": "/console/jobs",
        "batch-jobs": "/console/batch-jobs",
        "keys": "/console/keys",
        "traffic": f"/console/models/{MODEL}/traffic",
        "job": f"/console/jobs/{job_id}",
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in pages.items():
        page.goto(f"{stack}{path}", wait_until="networkidle")
        assert page.locator("h1").count() == 1, name
        assert critical_violations(page) == [], name
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert problems == [], problems


def test_promote_from_the_page_serves_the_next_prediction_then_roll_back(
    stack, offline_page, svc, tokens, settings
):
    page, problems = offline_page
    sign_in(page, stack, tokens["admin"])
    assert svc.registry.describe(MODEL)["aliases"]["champion"] == 1
    page.goto(f"{stack}/console/models/{MODEL}")
    page.get_by_role("link", name="Promote v2…").click()
    page.get_by_role("button", name="Continue").click()
    assert "Point browser-iris's alias champion at version 2" in page.locator("#summary").inner_text()
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"**/console/models/{MODEL}")
    assert "champion now points at version 2" in page.locator(".flash").inner_text()
    assert svc.registry.describe(MODEL)["aliases"]["champion"] == 2
    time.sleep(settings.registry_cache_seconds + 0.5)  # each API process trusts its lookup this long
    assert served_version(stack, tokens["predict"]) == 2

    page.get_by_role("link", name="Roll back champion…").click()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"**/console/models/{MODEL}")
    assert "rolled back to version 1" in page.locator(".flash").inner_text()
    time.sleep(settings.registry_cache_seconds + 0.5)
    assert served_version(stack, tokens["predict"]) == 1
    assert problems == [], problems


def test_cancel_a_running_batch_job_and_its_progress_stops(stack, offline_page, tokens):
    page, problems = offline_page
    table = arrow_table(iris_rows(20_000, 3, decimals=2))  # 20 chunks of 1,000 rows, ~0.4 s each
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    created = httpx.post(f"{stack}/v1/models/{SLOW}/batch-jobs", content=sink.getvalue(), timeout=60,
                         headers={**bearer(tokens["admin"]), "Content-Type": "text/csv"})  # fmt: skip
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    sign_in(page, stack, tokens["admin"])
    page.goto(f"{stack}/console/batch-jobs")
    row = page.locator(f"#batch-{job_id}")
    bar = row.locator("progress")
    # The bar moves by itself (htmx asks every second): wait for rows done > 0 without reloading.
    page.wait_for_function(
        "id => Number(document.querySelector(`#batch-${id} progress`).value) > 0", arg=job_id, timeout=60_000
    )
    page.screenshot(path=str(SHOTS / "batch-jobs.png"), full_page=True)  # one running, its bar moving
    row.get_by_role("link", name="Cancel…").click()
    page.get_by_role("button", name="Cancel the batch job").click()
    page.wait_for_url("**/console/batch-jobs")
    assert row.get_attribute("data-status") == "cancelled"
    # Running chunks finish; then nothing moves: not in the database, not on the page.
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{stack}/v1/batch-jobs/{job_id}", headers=bearer(tokens["admin"])).json())[
        "chunks"
    ]["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    done = job["rows"]["done"]
    assert 0 < done < 20_000
    page.reload()
    before = bar.get_attribute("value")
    time.sleep(3)
    assert bar.get_attribute("value") == before == str(done)
    assert row.get_attribute("hx-trigger") is None  # a finished row stops asking
    assert (
        httpx.get(f"{stack}/v1/batch-jobs/{job_id}", headers=bearer(tokens["admin"])).json()["rows"]["done"]
        == done
    )
    assert problems == [], problems


def test_a_predict_key_gets_403_pages_and_changes_nothing(stack, browser, svc, tokens):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, stack, tokens["predict"])
    assert page.get_by_role("link", name="Keys").count() == 0
    before = svc.registry.describe(MODEL)["aliases"]
    for path in ("/console/keys", f"/console/models/{MODEL}/promote?version=2"):
        answer = page.goto(f"{stack}{path}")
        assert answer.status == 403 and page.locator("h1").inner_text() == "Not allowed"
    # Even a well-formed post with its CSRF token is refused.
    page.goto(f"{stack}/console/models/{MODEL}")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(f"{stack}/console/models/{MODEL}/promote",
                                form={"csrf_token": token, "alias": "champion", "version": "2", "confirmed": "yes"})  # fmt: skip
    assert refused.status == 403
    assert svc.registry.describe(MODEL)["aliases"] == before
    context.close()


def test_a_form_posted_without_its_csrf_token_changes_nothing(stack, browser, svc, tokens):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, stack, tokens["admin"])
    before = svc.registry.describe(MODEL)["aliases"]
    refused = page.request.post(f"{stack}/console/models/{MODEL}/promote",
                                form={"alias": "champion", "version": "2", "confirmed": "yes"})  # fmt: skip
    assert refused.status == 400 and "nothing changed" in refused.text()
    assert svc.registry.describe(MODEL)["aliases"] == before
    context.close()
