"""Clinicians at work: find a patient by MRN, write a note safely, and chat live with a colleague.

Dr Chen and Dr Okafor each have their own browser context (their own cookies and socket), as two
people at two computers would.
"""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.pages import PHONE, check_accessibility, has_horizontal_overflow, screenshot
from tests.support.seed import ALICE, ALICE_MRN, BOB

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

    # On a phone: the chart's results table scrolls inside its own (keyboard-focusable) box, and the
    # search form stacks; the pages themselves never scroll sideways.
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.get_by_role("heading", name="Alice Moreau", level=1)).to_be_visible()
    assert not has_horizontal_overflow(page), "the clinician's chart scrolls sideways at 390 px"
    check_accessibility(page, "chart as clinician (phone)")
    main_nav(page).get_by_role("link", name="Find a patient").click()
    expect(page.get_by_label("MRN")).to_be_visible()
    assert not has_horizontal_overflow(page), "the search page scrolls sideways at 390 px"
    check_accessibility(page, "patient search (phone)")
    screenshot(page, "10-clinician-search-phone", full_page=False)


def test_a_patient_opening_another_patients_url_sees_the_refusal_page(new_page):
    page = new_page("alice")
    for path in (f"/patients/{BOB}", f"/patients/{BOB}/fhir"):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Not found", level=1)).to_be_visible()
        expect(page.get_by_text("There is no such record.")).to_be_visible()
        assert "Lindqvist" not in page.content()
    check_accessibility(page, "refusal page (patient)")
    screenshot(page, "18-refusal-other-patient")

    response = page.goto("/clinician")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You do not have access to this", level=1)).to_be_visible()
    page.get_by_role("link", name="Back to your home page").click()
    expect(page.get_by_role("heading", name="My chart · Alice Moreau", level=1)).to_be_visible()


def open_chat(page: Page) -> None:
    main_nav(page).get_by_role("link", name="Messages").click()
    expect(page.get_by_role("heading", name="Messages", level=1)).to_be_visible()
    # As a person would: act once the page is live, not on buttons the page's script has not wired yet.
    expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()


def messages_of(page: Page):
    return page.locator("[data-messages]").get_by_role("listitem")


def test_two_clinicians_chat_live_and_catch_up_after_going_offline(new_page):
    chen = new_page("dr.chen")
    okafor = new_page("dr.okafor")

    # Dr Chen starts a conversation with Dr Okafor; Dr Okafor opens it from the list.
    open_chat(chen)
    chen.get_by_label("Message a clinician").select_option(label="Dr. Tunde Okafor")
    chen.get_by_role("button", name="Start conversation").click()
    chen_box = chen.get_by_label("Message", exact=True)
    expect(chen_box).to_be_enabled()
    check_accessibility(chen, "chat")

    open_chat(okafor)
    okafor.get_by_role("list", name="Conversations").get_by_role("button", name=re.compile("Chen")).click()
    expect(okafor.locator("[data-conversation-title]")).to_contain_text("Chen")
    okafor_box = okafor.get_by_label("Message", exact=True)
    expect(okafor_box).to_be_enabled()
    expect(okafor.get_by_role("status").filter(has_text="Connected")).to_be_visible()

    # Each sees the other's messages as they are sent.
    chen_box.fill("Mrs Moreau's creatinine is up again, can you look today?")
    chen_box.press("Enter")
    expect(messages_of(okafor).filter(has_text="creatinine is up again")).to_have_count(1)

    # Typing shows on the other side; the reply arrives; Dr Chen's message shows it was read.
    okafor_box.press_sequentially("Will do")
    expect(chen.get_by_text("Dr. Tunde Okafor is typing…")).to_be_visible()
    okafor_box.press_sequentially(", after clinic.")
    okafor.get_by_role("button", name="Send").click()
    expect(messages_of(chen).filter(has_text="Will do, after clinic.")).to_have_count(1)
    mine = messages_of(chen).filter(has_text="creatinine is up again")
    expect(mine).to_contain_text("Read")
    expect(chen.get_by_text("Dr. Tunde Okafor is typing…")).to_have_count(0)
    screenshot(chen, "19-clinician-chat")

    # Dr Okafor's connection drops; the messages sent meanwhile appear once, in order, when it is back.
    okafor.context.set_offline(True)
    okafor_status = okafor.locator("[data-connection]")
    expect(okafor_status).to_have_attribute("data-state", "reconnecting", timeout=15_000)
    missed = [f"While you were away ({n})" for n in range(1, 4)]
    for text in missed:
        chen_box.fill(text)
        chen_box.press("Enter")
        expect(messages_of(chen).filter(has_text=text)).to_contain_text("You")
    okafor.context.set_offline(False)
    expect(okafor_status).to_have_attribute("data-state", "connected", timeout=20_000)
    for text in missed:
        expect(messages_of(okafor).filter(has_text=text)).to_have_count(1)
    texts = [t.split("\n")[0] for t in messages_of(okafor).all_inner_texts()]
    earlier = ["Mrs Moreau's creatinine is up again, can you look today?", "Will do, after clinic."]
    assert texts == [*earlier, *missed], texts
    expect(okafor_box).to_be_enabled()
    screenshot(okafor, "20-clinician-chat-after-reconnect")
