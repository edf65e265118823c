"""The idle time-out signs a person out on the server, and the page they land on says why."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.browser import require_chromium
from tests.support.pages import check_accessibility, screenshot
from tests.support.portal_server import PortalServer, running_portal

IDLE_SECONDS = 3


@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[PortalServer]:
    """This module's own portal: sessions end after 3 seconds without a request."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("e2e-idle")
    with running_portal(tmp, f"sqlite:///{tmp / 'portal.db'}",
                        PORTAL_SESSION_IDLE_MINUTES=str(IDLE_SECONDS / 60)) as server:
        yield server


def test_an_idle_session_ends_and_the_sign_in_page_says_why(new_page):
    page = new_page("alice")
    expect(page.get_by_role("heading", name="My chart · Alice Moreau", level=1)).to_be_visible()

    page.wait_for_timeout((IDLE_SECONDS + 1.5) * 1000)
    page.reload()

    expect(page).to_have_url(re.compile(r"/auth/signin\?.*reason=idle_timeout"))
    expect(page.get_by_test_id("signed-out-reason")).to_contain_text("inactivity")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    assert "Moreau" not in page.content()
    check_accessibility(page, "sign-in page after idle time-out")
    screenshot(page, "17-signed-out-idle")

    # Signing in again returns to the page they were on.
    page.get_by_role("link", name="Continue to sign-in").click()
    expect(page.get_by_role("heading", name="Sign in to the patient portal")).to_be_visible()
    check_accessibility(page, "development provider sign-in")
    screenshot(page, "00-dev-provider-signin")
    page.get_by_label("Login").fill("alice")
    page.get_by_label("Password").fill("alice-demo")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/chart$"))
    expect(page.get_by_role("heading", name="My chart · Alice Moreau", level=1)).to_be_visible()
