"""Step-up: break-glass and audit exports need a fresh, strong sign-in, proven by the new ID token.

A real, independent provider (panva's npm oidc-provider) signs people in and honours ``max_age``;
its login records the acr ``urn:portal:test:mfa``, which the portal requires. The TamperProxy
(tests/support/tamper_proxy.py) sits where the portal expects its issuer and re-issues the genuine
ID token with one thing wrong when a test asks: an old ``auth_time``, no ``auth_time``, a weaker
``acr`` or a bad signature. Two portals share one database: the second asks
for a sign-in no older than 2 seconds, so the provider must prompt again.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, csrf_token, portal_env, prepare_database
from tests.support.seed import ALICE
from tests.support.tamper_proxy import TamperProxy

pytestmark = pytest.mark.oidc

CLIENT_ID = "portal-step-up"
SECRET = secrets.token_urlsafe(32)
STRONG = "urn:portal:test:mfa"
REASON = "Collapsed in the waiting room; need her allergy list"


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    proxy: TamperProxy
    portal: PortalServer        # max_age 300 s (the default), acr required
    strict: PortalServer        # max_age 2 s
    database_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    npm_idp.require_npm_idp()
    tmp = tmp_path_factory.mktemp("step-up")
    ports = (free_port(), free_port())
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    client = {"client_id": CLIENT_ID, "client_secret": SECRET, "id_token_signed_response_alg": "RS256",
              "redirect_uris": [f"{url}/auth/callback" for url in urls],
              "post_logout_redirect_uris": [f"{url}/" for url in urls]}
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    with npm_idp.NpmOidcProvider([client], npm_idp.demo_accounts(), acr_values=[STRONG], login_acr=STRONG) as idp, \
            TamperProxy(idp.issuer, CLIENT_ID, SECRET) as proxy:
        oidc = {**npm_idp.portal_oidc_env(proxy.issuer, CLIENT_ID, SECRET), "PORTAL_OIDC_STEP_UP_ACR": STRONG}
        portal = PortalServer(portal_env(tmp, database_url, ports[0], **oidc), ports[0], tmp / "portal.log")
        strict = PortalServer(portal_env(tmp, database_url, ports[1], **oidc, PORTAL_OIDC_STEP_UP_MAX_AGE="2"),
                              ports[1], tmp / "strict.log")
        prepare_database(portal.env)
        npm_idp.start_portals(portal, strict)
        try:
            yield Stack(idp, proxy, portal, strict, database_url)
        finally:
            npm_idp.stop_portals(portal, strict)


@pytest.fixture(autouse=True)
def honest_proxy(stack: Stack) -> Iterator[TamperProxy]:
    stack.proxy.mode = "honest"
    yield stack.proxy
    stack.proxy.mode = "honest"


def _signed_in(portal: PortalServer, login: str) -> requests.Session:
    session, response = npm_idp.sign_in_portal(portal.url, login)
    assert response.status_code == 302, response.text[:300]
    return session


def _ask_for_break_glass(session: requests.Session, portal: PortalServer) -> str:
    """Submit the break-glass form; returns the step-up URL the portal sends the browser to."""
    asked = session.post(f"{portal.url}/patients/{ALICE}/break-glass", allow_redirects=False, timeout=10,
                         data={"reason": REASON, "csrf_token": csrf_token(session, f"{portal.url}/")})
    assert asked.status_code == 302, asked.text[:300]
    assert asked.headers["Location"].startswith("/auth/step-up?action=break_glass")
    return portal.url + asked.headers["Location"]


def _step_up(session: requests.Session, step_up_url: str, login: str) -> tuple[requests.Response, bool]:
    """Go through the provider again; returns the portal's final page and whether the provider prompted."""
    response = session.get(step_up_url, timeout=15)
    if "/interaction/" not in response.url:
        return response, False
    back = npm_idp.sign_in_with_requests(session, response.url, login)
    return session.get(back.headers["Location"], timeout=15), True


def _details(row: dict) -> dict:
    return json.loads(row["details"])


def test_break_glass_asks_the_provider_for_a_recent_strong_sign_in_and_records_it(stack: Stack) -> None:
    reyes = _signed_in(stack.portal, "demo-reyes")
    step_up_url = _ask_for_break_glass(reyes, stack.portal)
    to_provider = reyes.get(step_up_url, allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(to_provider.headers["Location"]).query)
    assert query["max_age"] == ["300"] and query["acr_values"] == [STRONG]

    page, prompted = _step_up(reyes, step_up_url, "demo-reyes")
    assert not prompted  # signed in seconds ago: within max_age the provider need not ask
    assert 'id="step-up-confirmed"' in page.text and REASON in page.text  # the typed reason is kept
    succeeded = audit_rows(stack.database_url, action="stepup.success")[-1]
    assert _details(succeeded)["step_up_acr"] == STRONG

    opened = reyes.post(f"{stack.portal.url}/patients/{ALICE}/break-glass", timeout=10,
                        data={"reason": REASON, "csrf_token": csrf_token(reyes, f"{stack.portal.url}/")})
    assert opened.status_code == 200 and "Alice Moreau" in opened.text
    granted = _details(audit_rows(stack.database_url, action="break_glass.granted")[-1])
    assert granted["step_up"] == "break_glass" and granted["step_up_acr"] == STRONG
    assert granted["step_up_auth_time"] == _details(succeeded)["step_up_auth_time"]

    # The step-up was spent on that grant: the next emergency access asks again.
    again = reyes.post(f"{stack.portal.url}/patients/{ALICE}/break-glass", allow_redirects=False, timeout=10,
                       data={"reason": REASON, "csrf_token": csrf_token(reyes, f"{stack.portal.url}/")})
    assert again.status_code == 302 and again.headers["Location"].startswith("/auth/step-up")


def test_a_sign_in_older_than_max_age_makes_the_provider_ask_again(stack: Stack) -> None:
    reyes = _signed_in(stack.strict, "demo-reyes")
    time.sleep(3)  # the strict portal accepts sign-ins at most 2 s old
    page, prompted = _step_up(reyes, _ask_for_break_glass(reyes, stack.strict), "demo-reyes")
    assert prompted, "the provider did not ask for a new sign-in although max_age had passed"
    assert 'id="step-up-confirmed"' in page.text


def test_signing_in_again_as_someone_else_does_not_step_up(stack: Stack) -> None:
    reyes = _signed_in(stack.strict, "demo-reyes")
    time.sleep(3)
    page, prompted = _step_up(reyes, _ask_for_break_glass(reyes, stack.strict), "demo-okafor")
    assert prompted and page.status_code == 401 and 'data-error-code="step_up_other_user"' in page.text
    assert reyes.get(f"{stack.strict.url}/api/v1/me", timeout=10).json()["name"] == "Dr. Ana Reyes"
    assert audit_rows(stack.database_url, action="stepup.failure")[-1]["reason"] == "step_up_other_user"


@pytest.mark.parametrize("mode, status, code", [
    ("stale_auth_time", 401, "step_up_stale"),
    ("no_auth_time", 401, "step_up_no_auth_time"),
    ("weak_acr", 401, "step_up_weak"),
    ("foreign_key", 400, "id_token_bad_signature"),
])
def test_a_token_that_does_not_prove_a_fresh_strong_sign_in_is_refused(stack: Stack, mode: str, status: int,
                                                                         code: str) -> None:
    reyes = _signed_in(stack.portal, "demo-reyes")
    granted_before = len(audit_rows(stack.database_url, action="break_glass.granted"))
    step_up_url = _ask_for_break_glass(reyes, stack.portal)
    stack.proxy.mode = mode
    page, _ = _step_up(reyes, step_up_url, "demo-reyes")

    assert page.status_code == status, page.text[:300]
    assert f'data-error-code="{code}"' in page.text
    retry = re.search(r'<a class="button" href="([^"]+)" id="sign-in-again">Sign in again', page.text)
    assert retry, "the refusal page does not offer to sign in again"
    assert reyes.get(f"{stack.portal.url}/api/v1/me", timeout=10).status_code == 200  # still signed in
    assert (audit_rows(stack.database_url, action="stepup.failure")[-1]["reason"]) == code
    assert len(audit_rows(stack.database_url, action="break_glass.granted")) == granted_before

    stack.proxy.mode = "honest"  # signing in again, properly this time, completes the action
    page, _ = _step_up(reyes, stack.portal.url + retry.group(1).replace("&amp;", "&"), "demo-reyes")
    assert 'id="step-up-confirmed"' in page.text


def test_an_audit_export_needs_a_fresh_sign_in_that_lasts_a_short_window(stack: Stack) -> None:
    cora = _signed_in(stack.portal, "demo-cora")
    export_url = f"{stack.portal.url}/compliance/export?format=csv&patient={ALICE}"
    first = cora.get(export_url, allow_redirects=False, timeout=10)
    assert first.status_code == 302 and first.headers["Location"].startswith("/auth/step-up?action=audit_export")
    download, _ = _step_up(cora, stack.portal.url + first.headers["Location"], "demo-cora")
    assert download.status_code == 200 and download.headers["Content-Type"].startswith("text/csv")
    exported = _details(audit_rows(stack.database_url, action="audit.export", outcome="allowed")[-1])
    assert exported["step_up"] == "audit_export" and exported["step_up_acr"] == STRONG

    again = cora.get(export_url, allow_redirects=False, timeout=30)  # within the window: no new sign-in
    assert again.status_code == 200

    elsewhere = _signed_in(stack.portal, "demo-cora")  # the step-up belongs to one session, not to the person
    api = elsewhere.get(export_url, headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert api.status_code == 401 and api.json()["error"]["code"] == "step_up_required"
    assert api.json()["error"]["step_up_url"].startswith("/auth/step-up?action=audit_export")
