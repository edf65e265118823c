"""A patient connects an app of her choice, sees it at work, and disconnects it, in Chromium.

An administrator registers the app on the registry page (its secret shown once). Alice starts the
app's standalone launch in her browser: the portal asks her to sign in, then shows the consent page,
where she unticks her visit notes. The app (here, the test with Authlib's OAuth client; its redirect
URI is answered by Playwright) exchanges the code and reads her results. Alice finds it under
Connected apps and in "Who viewed my chart", disconnects it, and the app is refused from then on.
"""
from __future__ import annotations

import re

import requests
from authlib.integrations.requests_client import OAuth2Session
from playwright.sync_api import Route, expect

from tests.support.pages import check_accessibility, screenshot
from tests.support.seed import ALICE

APP_ORIGIN = "https://health-diary.example"
REDIRECT_URI = APP_ORIGIN + "/callback"
SCOPES = "launch/patient openid fhirUser offline_access patient/*.rs"


def app_page(route: Route) -> None:
    """The app's redirect URI: a page of its own that says it is connected (no network leaves the machine)."""
    route.fulfill(status=200, content_type="text/html",
                  body="<!doctype html><html lang=en><title>Health Diary</title><h1>Health Diary is connected</h1></html>")


def test_a_patient_connects_an_app_sees_it_at_work_and_disconnects_it(portal, new_page):
    # The administrator registers the app: a confidential client, its secret shown on this page only.
    admin = new_page("adam")
    admin.goto("/admin/apps")
    admin.get_by_label("Name (shown to patients)").fill("Health Diary")
    admin.get_by_label("Redirect URIs, one per line (matched exactly)").fill(REDIRECT_URI)
    admin.get_by_role("button", name="Register").click()
    expect(admin.locator("[data-registered]")).to_contain_text("Health Diary is registered")
    client_id = admin.locator("[data-client-id]").inner_text()
    secret = admin.locator("[data-client-secret]").inner_text()
    check_accessibility(admin, "app registry")
    screenshot(admin, "28-admin-apps")
    admin.reload()
    assert secret not in admin.content()

    # The app sends Alice's browser to the portal's authorization endpoint.
    fhir_base = f"{portal.url}/fhir"
    discovery = requests.get(f"{fhir_base}/.well-known/smart-configuration", timeout=10).json()
    app = OAuth2Session(client_id, secret, redirect_uri=REDIRECT_URI, scope=SCOPES, code_challenge_method="S256")
    verifier = "v" * 20 + "erifier-of-the-health-diary-app-0123456789"
    url, _state = app.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier, aud=fhir_base)

    page = new_page()
    page.context.route(f"{APP_ORIGIN}/**", app_page)
    page.goto(url)
    # Not signed in yet: the portal's usual sign-in (the development provider here), then the consent page.
    page.get_by_label("Login").fill("alice")
    page.get_by_label("Password").fill("alice-demo")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Health Diary to your records?")
    expect(page.locator("[data-offline-note]")).to_be_visible()
    check_accessibility(page, "consent page")
    screenshot(page, "29-consent")
    page.get_by_label(re.compile("Your visit notes")).uncheck()
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_role("heading", name="Health Diary is connected")).to_be_visible()
    assert page.url.startswith(REDIRECT_URI)

    # The app exchanges the code and reads; the notes Alice unticked stay closed to it.
    token = app.fetch_token(discovery["token_endpoint"], authorization_response=page.url, code_verifier=verifier)
    assert token["patient"] == ALICE and "DocumentReference" not in token["scope"]
    labs = app.get(f"{fhir_base}/Observation", params={"patient": ALICE, "category": "laboratory"}, timeout=10)
    assert labs.status_code == 200 and labs.json()["total"] > 0
    assert app.get(f"{fhir_base}/DocumentReference", params={"patient": ALICE}, timeout=10).status_code == 403

    # Alice sees the app under Connected apps and in "Who viewed my chart".
    page.goto("/chart")
    page.get_by_role("link", name="Connected apps").click()
    row = page.locator(f'tr[data-app="{client_id}"]')
    expect(row).to_contain_text("Health Diary")
    expect(row).to_contain_text("Your test results")
    expect(row).not_to_contain_text("Your visit notes")
    check_accessibility(page, "connected apps")
    screenshot(page, "30-connected-apps")
    page.get_by_role("link", name="Who viewed my chart").first.click()
    visit = page.get_by_role("row").filter(has_text="Health Diary").first
    expect(visit).to_contain_text("App you connected")
    expect(visit).to_contain_text("Listed your results")
    screenshot(page, "31-access-log-app")

    # She disconnects it: every token ends at once.
    page.get_by_role("link", name="Connected apps").click()
    page.get_by_role("button", name="Disconnect Health Diary").click()
    expect(page.get_by_role("status")).to_contain_text("Health Diary is disconnected")
    expect(page.locator(f'tr[data-app="{client_id}"]')).to_have_count(0)
    refused = app.get(f"{fhir_base}/Observation", params={"patient": ALICE}, timeout=10)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["WWW-Authenticate"]
    renewal = requests.post(discovery["token_endpoint"], auth=(client_id, secret), timeout=10,
                            data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert renewal.status_code == 400 and renewal.json()["error"] == "invalid_grant"
