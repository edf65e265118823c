"""The console in Chromium: the live feed script runs under the portal's CSP and renders new events."""
from __future__ import annotations

import pytest

from tests.support.browser import launch_chromium, require_chromium
from tests.support.portal_server import DEMO_PASSWORDS, sign_in

ALICE = "00000000-0000-4000-8000-000000000001"
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.browser


def test_console_live_feed_in_a_browser(portal):
    require_chromium()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context().new_page()
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" and "Content Security Policy" in message.text else None)
            page.goto(f"{portal.url}/auth/login")
            page.fill("input[name=login]", "cora")
            page.fill("input[name=password]", DEMO_PASSWORDS["cora"])
            page.locator("form button[type=submit], form input[type=submit]").first.click()
            page.wait_for_url(f"{portal.url}/compliance/**", timeout=TIMEOUT_MS)
            page.wait_for_selector('#feed-status[data-state="live"]', timeout=TIMEOUT_MS)

            chen = sign_in(portal.url, "dr.chen")
            assert chen.get(f"{portal.url}/patients/{ALICE}", timeout=10).status_code == 200
            item = page.locator("[data-audit-feed] li", has_text="chart.read").first
            item.wait_for(timeout=TIMEOUT_MS)
            assert ALICE in item.inner_text()
            assert item.locator("a").get_attribute("href").startswith("/compliance/events/")
            assert page.locator("svg.activity-chart rect").count() >= 24
        finally:
            browser.close()
    assert problems == []
