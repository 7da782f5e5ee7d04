"""/docs in a real headless Chromium with no route to the internet: Swagger UI renders the API.

Swagger UI's files come from predq itself (app/api/docs.py); any request that leaves the
machine is refused here, as on a production network, and fails the test.
"""

from __future__ import annotations

from typing import Any


def test_docs_shows_the_prediction_route_with_no_failed_request(api_server: str, offline_page: Any, tmp_path):
    page, problems = offline_page

    page.goto(f"{api_server}/docs", wait_until="networkidle")
    route = page.locator('.opblock-summary-path[data-path="/v1/models/{name}/predictions"]')
    route.wait_for(state="visible", timeout=15_000)
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)

    assert route.is_visible(), "Swagger UI did not list the prediction route"
    assert page.locator(".opblock-post").count() >= 5, "Swagger UI rendered few operations"
    assert problems == [], problems
