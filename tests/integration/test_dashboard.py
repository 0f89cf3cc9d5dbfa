"""The dashboard in a real headless browser (the OS's Chromium, driven by Playwright) against
a real penny server: the page asks for a key, draws its charts from the report API, and
the numbers it shows are the API's for the same key. A screenshot is kept."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from models.costing import store_calibration
from penny.runtime import Runtime, open_runtime
from tests.integration.test_reports import ACME, BETA, SPEED, post, run_queued
from tests.support import LiveServer, make_settings, reset_tables

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def shown_usd(value: str | None) -> str:
    """What the page shows for an API money string: dollars to six places."""
    return "-" if value is None else f"${float(Decimal(value)):.6f}"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, LiveServer]]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-beta": "beta"})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    with runtime.sessions() as session:
        store_calibration(session, settings.default_model, SPEED)
    try:
        with LiveServer(create_app(runtime)) as live:
            yield runtime, live
    finally:
        runtime.close()


def _scenario(runtime: Runtime, live: LiveServer) -> None:
    """Two features of acme's, a retry loop, a cached answer, and beta's own job."""
    with httpx.Client(base_url=live.url) as client:
        for i in range(6):
            post(client, ACME, f"summary {i} n={6 + 3 * i}", max_tokens=64,  # type: ignore[arg-type]
                 feature="summaries")
        for i in range(3):
            post(client, ACME, f"tag {i} n=3", max_tokens=64, feature="tagging")  # type: ignore[arg-type]
        for attempt in range(3):
            response = client.post(
                "/v1/jobs", headers={**ACME, "x-stainless-retry-count": str(attempt)},
                json={"messages": [{"role": "user", "content": "flaky n=9"}],
                      "max_tokens": 16, "metadata": {"feature": "sync"}, "cache": "off"})
            assert response.status_code == 202, response.text
        post(client, BETA, "beta n=40", max_tokens=64, feature="secret")  # type: ignore[arg-type]
        run_queued(runtime)
        post(client, ACME, "tag 0 n=3", max_tokens=64, feature="tagging")  # type: ignore[arg-type]


def _api(live: LiveServer, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{live.url}{path}", params=params, headers=ACME)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs the OS's Chromium")
def test_the_dashboard_shows_the_apis_numbers(
    server: tuple[Runtime, LiveServer], tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    runtime, live = server
    _scenario(runtime, live)
    costs = _api(live, "/v1/reports/costs", group_by="feature")
    audit = _api(live, "/v1/reports/max-tokens-audit")
    storms = _api(live, "/v1/reports/retry-storms")
    totals = costs["totals"]
    assert totals["requests"] == 13 and Decimal(totals["saved_vs_naive_usd"]) > 0

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{live.url}/dashboard")
            page.fill("#key", "key-acme")
            page.click("#load")
            page.wait_for_selector("#status[data-loaded=true]", timeout=30_000)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            def metric(name: str) -> str:
                return page.locator(f".cards [data-metric={name}]").inner_text()

            assert metric("cost_usd") == shown_usd(totals["cost_usd"])
            assert metric("naive_cost_usd") == shown_usd(totals["naive_cost_usd"])
            assert metric("saved_vs_naive_usd") == shown_usd(totals["saved_vs_naive_usd"])
            assert metric("cost_per_request_usd") == shown_usd(totals["cost_per_request_usd"])
            assert metric("requests") == f"{totals['requests']:,}"
            assert metric("tokens_per_dollar") == f"{round(totals['tokens_per_dollar']):,}"

            feature_bars = page.locator("#chart-features rect[data-value]")
            assert feature_bars.evaluate_all("bars => bars.map(b => b.dataset.value)") == [
                shown_usd(line["cost_usd"]) for line in costs["data"]]
            mechanism_bars = page.locator("#chart-mechanisms rect[data-value]")
            assert mechanism_bars.evaluate_all("bars => bars.map(b => b.dataset.value)") == [
                shown_usd(v) for v in totals["savings_by_mechanism_usd"].values()]
            assert page.locator("#audit [data-metric=audit_saving]").all_inner_texts() == [
                shown_usd(line["estimated_saving_usd"]) for line in audit["data"]]
            assert page.locator("#storms [data-metric=storm_sends]").all_inner_texts() == [
                str(s["sends"]) for s in storms["requests"]]
            assert storms["requests"][0]["sends"] == 3
            # beta's feature is nowhere on acme's page
            assert "secret" not in page.locator("main").inner_text()
            assert errors == []

            page.fill("#key", "not-a-key")
            page.click("#load")
            page.wait_for_selector("#status.error", timeout=30_000)
            assert "API key" in page.locator("#status").inner_text()
        finally:
            browser.close()
    keep = os.environ.get("PENNY_TEST_SCREENSHOT_DIR")
    if keep:  # where a developer who wants to look at it asked for it
        shutil.copy(tmp_path / "dashboard.png", Path(keep) / "dashboard.png")
