"""A patient's whole visit, signed in through a real, independent OpenID Provider (the npm oidc-provider).

Alice signs in on the provider's own login and consent pages, reads her chart (desktop and phone),
opens a result, downloads her FHIR bundle, messages her care team, sees who viewed her chart, and
signs out at the provider too; afterwards the back button shows no health information.
"""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.npm_idp import sign_in_portal
from tests.support.pages import (
    DESKTOP,
    PHONE,
    check_accessibility,
    has_horizontal_overflow,
    json_download,
    screenshot,
    sign_in_npm,
)
from tests.support.seed import ALICE, ALICE_MRN

PHI = ("Moreau", ALICE_MRN)


def assert_no_phi(page: Page) -> None:
    text = page.content()
    for value in PHI:
        assert value not in text, f"{value!r} is visible at {page.url} after sign-out"


def test_patient_signs_in_reads_downloads_messages_and_signs_out(npm_portal, new_page):
    portal = npm_portal.portal
    # Dr Chen (on Alice's care team) opened her chart earlier today, so "Who viewed my chart" has a visit.
    chen, _ = sign_in_portal(portal.url, "demo-chen")
    assert chen.get(f"{portal.url}/patients/{ALICE}", timeout=10).status_code == 200

    page = new_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Your health record, securely")).to_be_visible()
    check_accessibility(page, "landing page")
    screenshot(page, "01-landing")

    # The portal's sign-in page, then the provider's own login and consent pages.
    page.goto("/auth/signin")
    check_accessibility(page, "sign-in page")
    page.get_by_role("link", name="Continue to sign-in").click()
    expect(page).to_have_url(re.compile(re.escape(npm_portal.issuer) + "/interaction/"))
    sign_in_npm(page, "demo-alice")

    # Her chart.
    expect(page).to_have_url(f"{portal.url}/chart")
    expect(page.get_by_role("heading", level=1)).to_have_text("My chart · Alice Moreau")
    expect(page.get_by_test_id("mrn")).to_have_text(ALICE_MRN)
    expect(page.get_by_role("heading", name="Lab results")).to_be_visible()
    check_accessibility(page, "patient chart")
    screenshot(page, "02-patient-chart")

    # From the keyboard: the first Tab reaches "Skip to content", which moves focus to the main content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    # The same chart on a phone: nothing scrolls sideways except the tables' own scroll boxes.
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("My chart · Alice Moreau")
    assert not has_horizontal_overflow(page), "the chart scrolls sideways at 390 px"
    check_accessibility(page, "patient chart (phone)")
    screenshot(page, "03-patient-chart-phone", full_page=False)
    page.set_viewport_size(DESKTOP)

    # A result.
    first = page.get_by_role("region", name="Lab results").get_by_role("link").first
    test_name = first.inner_text()
    first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(test_name)
    expect(page.get_by_test_id("result-value")).not_to_be_empty()
    expect(page.get_by_text("Reference range", exact=True)).to_be_visible()
    check_accessibility(page, "result")
    screenshot(page, "04-patient-result")
    page.get_by_role("link", name="Back to my chart").click()

    # The FHIR bundle, as a file download.
    with page.expect_download() as info:
        page.get_by_role("link", name="Download (FHIR)").click()
    download = info.value
    assert download.suggested_filename == f"chart-{ALICE}.fhir.json"
    bundle = json_download(download)
    assert bundle["resourceType"] == "Bundle"
    kinds = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
    assert {"Patient", "Observation"} <= kinds

    # A message to the care team; it appears in the conversation once the server has stored it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
    expect(page.get_by_role("heading", name="Messages", level=1)).to_be_visible()
    page.get_by_role("button", name="Message my care team").click()
    composer = page.get_by_label("Message", exact=True)
    expect(composer).to_be_enabled()
    composer.fill("Could someone explain my creatinine result, please?")
    page.get_by_role("button", name="Send").click()
    messages = page.get_by_role("list", name="Messages")
    expect(messages.get_by_text("Could someone explain my creatinine result, please?")).to_have_count(1)
    expect(composer).to_have_value("")
    check_accessibility(page, "patient messages")
    screenshot(page, "05-patient-messages")

    # Who viewed my chart: Dr Chen's visit is listed.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Who viewed my chart").click()
    expect(page.get_by_role("heading", name="Who viewed my chart", level=1)).to_be_visible()
    expect(page.get_by_role("table").get_by_role("row").filter(has_text="Chen").first).to_be_visible()
    check_accessibility(page, "access log")
    screenshot(page, "06-patient-access-log")

    # Sign out: the portal ends its session, then the provider asks to end its own.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(re.escape(npm_portal.issuer)))
    page.get_by_role("button", name=re.compile("Yes, sign me out", re.I)).click()
    expect(page).to_have_url(re.compile(re.escape(portal.url) + r"/(\?state=[\w-]+)?$"))
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)

    # Back through the history: no page shows PHI from a cache (every portal page is no-store), and the
    # access log's URL now sends the browser to sign in.
    for _ in range(4):
        if page.url.startswith(f"{portal.url}/auth/signin"):
            break
        page.go_back()
        assert_no_phi(page)
    expect(page).to_have_url(re.compile(re.escape(portal.url) + r"/auth/signin\?next=(/|%2F)chart(/|%2F)access-log$"))
    page.reload()
    expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    assert_no_phi(page)
    assert page.request.get(f"{portal.url}/api/v1/me").status == 401
