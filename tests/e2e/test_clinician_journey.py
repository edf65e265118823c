"""Clinicians at work: find a patient by MRN, write a note safely, and chat live with a colleague.

Dr Chen and Dr Okafor each have their own browser context (their own cookies and socket), as two
people at two computers would.
"""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import (ALICE, ALICE_MRN, PHONE, check_accessibility, has_horizontal_overflow, screenshot)

NOTE = "<script>alert(1)</script> BP 128/80, reviewed inhaler technique."


def main_nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def test_clinician_finds_a_patient_by_mrn_and_adds_a_note_once(new_page):
    page = new_page("dr.chen")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    expect(page.get_by_role("heading", name="My patients", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Moreau, Alice")).to_be_visible()
    check_accessibility(page, "clinician home")
    screenshot(page, "07-clinician-home")

    main_nav(page).get_by_role("link", name="Find a patient").click()
    page.get_by_label("MRN").fill(ALICE_MRN)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="1 patient found")).to_be_visible()
    check_accessibility(page, "patient search")
    screenshot(page, "08-clinician-search")

    page.get_by_role("link", name="Moreau, Alice").click()
    expect(page).to_have_url(re.compile(f"/patients/{ALICE}$"))
    expect(page.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()
    expect(page.get_by_test_id("mrn")).to_have_text(ALICE_MRN)
    check_accessibility(page, "chart as clinician")

    notes = page.get_by_role("region", name="Visit notes")
    notes.get_by_label("Title").fill("Asthma review")
    notes.get_by_label("Note").fill(NOTE)
    notes.get_by_role("button", name="Save note").dblclick()
    expect(page.get_by_role("status").filter(has_text="saved")).to_be_visible()
    written = page.get_by_test_id("note-text").filter(has_text="BP 128/80, reviewed inhaler technique.")
    expect(written).to_have_count(1)
    expect(written).to_have_text(NOTE)  # the markup is shown as text, never run
    assert page.locator("#notes script").count() == 0
    page.reload()
    expect(written).to_have_count(1)
    assert dialogs == [], f"a script ran from a note: {dialogs}"
    screenshot(page, "09-clinician-chart")

    # The search page on a phone: the form stacks and nothing scrolls sideways.
    page.set_viewport_size(PHONE)
    main_nav(page).get_by_role("link", name="Find a patient").click()
    expect(page.get_by_label("MRN")).to_be_visible()
    assert not has_horizontal_overflow(page), "the search page scrolls sideways at 390 px"
    check_accessibility(page, "patient search (phone)")
    screenshot(page, "10-clinician-search-phone", full_page=False)
