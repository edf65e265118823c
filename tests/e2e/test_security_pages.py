"""Sessions, disclosures and keys in the browser: what people see of the portal's security features.

Alice ends a session she left open elsewhere, and that page leaves for the sign-in page saying why.
Alice and Cora read accountings of disclosures; Adam sees the signed-in users and the keys.
"""
from __future__ import annotations

import csv
import io
import re

from playwright.sync_api import Page, expect

from tests.support.pages import check_accessibility, read_download, screenshot
from tests.support.seed import ALICE_MRN


def main_nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def test_a_session_ended_from_another_device_leaves_that_page_saying_why(new_page):
    elsewhere = new_page("alice")
    expect(elsewhere.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()

    here = new_page("alice")
    main_nav(here).get_by_role("link", name="My sessions").click()
    expect(here.get_by_role("heading", name="My sessions", level=1)).to_be_visible()
    rows = here.get_by_role("table").locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="This browser")).to_have_count(1)
    expect(rows.first).to_contain_text("127.0.0.1")
    check_accessibility(here, "my sessions")
    screenshot(here, "22-my-sessions")

    rows.filter(has_not_text="This browser").get_by_role("button", name=re.compile("^End session")).click()
    expect(here.get_by_role("status").filter(has_text="That session has ended")).to_be_visible()
    expect(rows).to_have_count(1)

    # The other page was told over its live connection and went to the sign-in page with the reason.
    expect(elsewhere).to_have_url(re.compile(r"/auth/signin\?reason=revoked"))
    expect(elsewhere.get_by_text("This session was ended from your session list")).to_be_visible()
    screenshot(elsewhere, "23-session-ended-elsewhere")


def test_patient_and_compliance_officer_read_the_accounting_of_disclosures(new_page):
    chen = new_page("dr.chen")
    chen.get_by_role("link", name="Moreau, Alice").click()
    expect(chen.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()

    alice = new_page("alice")
    main_nav(alice).get_by_role("link", name="Who viewed my chart").click()
    alice.get_by_role("link", name="accounting of disclosures").click()
    expect(alice.get_by_role("heading", name="Accounting of disclosures", level=1)).to_be_visible()
    report = alice.get_by_role("table")
    expect(report.locator("tbody tr").filter(has_text="Dr. Mei Chen").first).to_be_visible()
    check_accessibility(alice, "patient disclosures")
    screenshot(alice, "24-patient-disclosures")
    with alice.expect_download() as info:
        alice.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(read_download(info.value).decode("utf-8"))))
    assert any(row["who"] == "Dr. Mei Chen" for row in rows), rows[:3]
    assert not any(row["who"] == "Alice Moreau" for row in rows)

    cora = new_page("cora")
    main_nav(cora).get_by_role("link", name="Disclosures").click()
    cora.get_by_label("MRN").fill(ALICE_MRN)
    cora.get_by_role("button", name="Show report").click()
    expect(cora.get_by_role("table").locator("tbody tr").filter(has_text="Dr. Mei Chen").first).to_be_visible()
    check_accessibility(cora, "compliance disclosures")
    screenshot(cora, "25-compliance-disclosures")


def test_admin_sees_signed_in_users_and_keys(new_page):
    new_page("dr.okafor")
    adam = new_page("adam")
    main_nav(adam).get_by_role("link", name="Signed-in users").click()
    expect(adam.get_by_role("heading", name="Signed-in users", level=1)).to_be_visible()
    expect(adam.get_by_role("row").filter(has_text="Dr. Tunde Okafor")).to_have_count(1)
    check_accessibility(adam, "admin signed-in users")
    screenshot(adam, "26-admin-sessions")

    main_nav(adam).get_by_role("link", name="Keys").click()
    expect(adam.get_by_role("heading", name="Encryption keys", level=1)).to_be_visible()
    expect(adam.get_by_text("Primary").first).to_be_visible()
    check_accessibility(adam, "admin keys")
    screenshot(adam, "27-admin-keys")


def test_admin_sees_patient_accounts_and_how_each_reaches_its_chart(new_page):
    new_page("alice")  # her provider's claim carries her MRN: linked at sign-in
    adam = new_page("adam")
    main_nav(adam).get_by_role("link", name="Patient accounts").click()
    expect(adam.get_by_role("heading", name="Patient accounts", level=1)).to_be_visible()
    expect(adam.get_by_role("row").filter(has_text="Linked by the sign-in claim").first).to_be_visible()
    expect(adam.get_by_role("button", name=re.compile("^Link")).first).to_be_visible()
    check_accessibility(adam, "admin patient accounts")
