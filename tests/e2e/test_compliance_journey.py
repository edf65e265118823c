"""Oversight: emergency (break-glass) access and the compliance officer's console, in the browser.

Dr Reyes is not on Alice's care team: he is refused, opens the chart with a typed reason, and Cora
(compliance) sees that access flagged. Cora also filters the audit log, watches the live feed while a
clinician opens a chart, exports CSV and runs the integrity check. Adam's care-team page is checked too.
"""
from __future__ import annotations

import csv
import io
import re

from playwright.sync_api import Page, expect

from tests.support.pages import (
    DESKTOP,
    PHONE,
    check_accessibility,
    read_download,
    screenshot,
    sign_in_again,
)
from tests.support.seed import ALICE, ALICE_MRN

REASON = "Unconscious in the emergency department; allergy list needed now."


def main_nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def test_outside_clinician_is_refused_uses_break_glass_and_compliance_sees_it(new_page):
    reyes = new_page("dr.reyes")
    expect(reyes.get_by_role("heading", name="My patients", level=1)).to_be_visible()
    main_nav(reyes).get_by_role("link", name="Find a patient").click()
    reyes.get_by_label("MRN").fill(ALICE_MRN)
    reyes.get_by_role("button", name="Search").click()
    reyes.get_by_role("link", name="Moreau, Alice").click()

    # Refused: the page names nobody, explains, and offers emergency access.
    expect(reyes.get_by_role("heading", name="You do not have access to this", level=1)).to_be_visible()
    expect(reyes.get_by_text("Access refused")).to_be_visible()
    assert "Moreau" not in reyes.content() and ALICE_MRN not in reyes.content()
    expect(reyes.get_by_role("heading", name="Emergency access")).to_be_visible()
    check_accessibility(reyes, "break-glass refusal page")
    screenshot(reyes, "11-break-glass-refusal")

    reyes.get_by_label("Reason for emergency access").fill(REASON)
    reyes.get_by_role("button", name="Open chart with break-glass").click()

    # Emergency access needs a fresh sign-in: the provider asks again, then Dr Reyes confirms.
    sign_in_again(reyes, "dr.reyes")
    expect(reyes.get_by_role("heading", name="Emergency (break-glass) access", level=1)).to_be_visible()
    expect(reyes.get_by_role("status").filter(has_text="You signed in again")).to_be_visible()
    expect(reyes.get_by_label("Reason for emergency access")).to_have_value(REASON)
    check_accessibility(reyes, "break-glass confirmation after step-up")
    screenshot(reyes, "11b-break-glass-step-up")
    reyes.get_by_role("button", name="Confirm emergency access").click()
    expect(reyes.get_by_role("alert").filter(has_text="Emergency (break-glass) access")).to_be_visible()
    expect(reyes.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()
    expect(reyes.get_by_role("status").filter(has_text="flagged for compliance review")).to_be_visible()
    check_accessibility(reyes, "chart under break-glass")
    screenshot(reyes, "12-break-glass-chart")

    # Cora sees the access flagged, with the reason Dr Reyes typed, and marks it reviewed.
    cora = new_page("cora")
    main_nav(cora).get_by_role("link", name="Flagged").click()
    expect(cora.get_by_role("heading", name="Flagged activity", level=1)).to_be_visible()
    break_glass = cora.get_by_role("region", name="Break-glass access")
    row = break_glass.get_by_role("row").filter(has_text=REASON)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Reyes")
    expect(row).to_contain_text(ALICE)
    check_accessibility(cora, "compliance flags")
    screenshot(cora, "13-compliance-flags")
    cora.set_viewport_size(PHONE)
    check_accessibility(cora, "compliance flags (phone)")
    cora.set_viewport_size(DESKTOP)
    row.get_by_role("button", name="Mark reviewed").click()
    expect(cora.get_by_role("status").filter(has_text="marked as reviewed")).to_be_visible()
    expect(break_glass.get_by_role("row").filter(has_text=REASON)).to_contain_text("Reviewed")

    # The grant's audit event records the step-up: when Dr Reyes signed in again.
    cora.goto("/compliance/?action=break_glass.granted")
    cora.get_by_role("table", name="Matching audit events").locator("tbody tr a").first.click()
    expect(cora.get_by_role("heading", name=re.compile("^Audit event"), level=1)).to_be_visible()
    expect(cora.get_by_role("row", name=re.compile("Detail: step_up break_glass"))).to_be_visible()
    expect(cora.get_by_role("row", name=re.compile(r"Detail: step_up_auth_time \d{4}-"))).to_be_visible()
    check_accessibility(cora, "break-glass audit event with step-up")


def test_compliance_officer_filters_watches_the_live_feed_exports_and_verifies(new_page):
    cora = new_page("cora")
    expect(cora.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    feed_status = cora.get_by_role("region", name="Live feed").get_by_role("status")
    expect(feed_status).to_have_text(re.compile("^Live"))

    # Filter: chart reads that were allowed.
    cora.get_by_label("Action (prefix)").fill("chart.read")
    cora.get_by_label("Outcome").select_option("allowed")
    cora.get_by_role("button", name="Search").click()
    expect(cora).to_have_url(re.compile(r"action=chart\.read"))
    events = cora.get_by_role("table", name="Matching audit events")
    expect(events.locator("tbody tr").first).to_be_visible()
    actions = events.locator("tbody tr td:nth-child(5)").all_inner_texts()
    assert actions and all(action.startswith("chart.read") for action in actions), actions
    expect(feed_status).to_have_text(re.compile("^Live"))
    check_accessibility(cora, "compliance console")

    # The live feed shows a chart being opened elsewhere, as it happens.
    chen = new_page("dr.chen")
    feed = cora.get_by_role("region", name="Live feed").get_by_role("list")
    opened = feed.get_by_role("listitem").filter(has_text="chart.read").filter(has_text=ALICE)
    expect(opened).to_have_count(0)
    chen.get_by_role("link", name="Moreau, Alice").click()
    expect(chen.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()
    expect(opened).to_have_count(1)
    screenshot(cora, "14-compliance-console")

    # CSV export of the filtered events.
    export = cora.get_by_role("region", name="Export these events")
    with cora.expect_download() as info:
        export.get_by_role("link", name="CSV", exact=True).click()
        sign_in_again(cora, "cora")  # exports need a fresh sign-in
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(read_download(download).decode("utf-8"))))
    assert rows, "the CSV export is empty"
    assert {row["action"] for row in rows} == {"chart.read"}, {row["action"] for row in rows}
    assert {row["outcome"] for row in rows} == {"allowed"}

    # The integrity check, from the console.
    cora.goto("/compliance/")
    main_nav(cora).get_by_role("link", name="Integrity").click()
    expect(cora.get_by_role("heading", name="Audit log integrity", level=1)).to_be_visible()
    cora.get_by_role("button", name="Verify now").click()
    expect(cora.get_by_role("status").filter(has_text="Verification finished")).to_be_visible()
    expect(cora.get_by_text(re.compile("^OK: the audit log"))).to_be_visible()
    check_accessibility(cora, "compliance integrity")
    screenshot(cora, "15-compliance-integrity")


def test_admin_care_teams_page(new_page):
    adam = new_page("adam")
    expect(adam.get_by_role("heading", name="Care teams", level=1)).to_be_visible()
    expect(adam.get_by_role("heading", name="New team")).to_be_visible()
    check_accessibility(adam, "admin care teams")
    screenshot(adam, "16-admin-teams")
