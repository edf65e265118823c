"""Sign-in sessions: rotation, cookie flags, headers, CSRF, idle time-out and rate limits.

Sign-in goes through the built-in development provider. Most tests use the in-process portal
(tests/support/harness.py, one transaction for the module) through ``requests``; two real processes serve
one database for what needs a server: one with a 3-second idle time-out (and 2 disclosure reports a minute
per person), which also checks Socket.IO's origin check (made by the server, before the app), and one
with a login limit of 3 per minute.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urljoin

import pytest
import requests
import socketio
import sqlalchemy as sa
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from portal.models import LoginSession
from tests.support.audit_log import audit_rows
from tests.support.chat import ChatClient
from tests.support.database import writing
from tests.support.environment import free_port
from tests.support.harness import InProcessPortal
from tests.support.npm_idp import dev_portal, start_portals, stop_portals
from tests.support.portal_server import DEMO_PASSWORDS, PortalServer, csrf_token, parse_form, sign_in, sign_in_again
from tests.support.seed import ALICE


@pytest.fixture(scope="module")
def portal(portal_in_process_for_module):
    return portal_in_process_for_module


@dataclass
class Extra:
    idle: PortalServer
    limited: PortalServer


def _sibling(portal: PortalServer, name: str, **overrides: str) -> PortalServer:
    """Another portal process on the same database and keys, on its own port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(portal.env, PORTAL_EXTERNAL_URL=base, PORTAL_OIDC_ISSUER=f"{base}/devidp", **overrides)
    return PortalServer(env, port, portal.log_path.with_name(f"{name}-{port}.log"))


@pytest.fixture(scope="module")
def extra(tmp_path_factory) -> Iterator[Extra]:
    with dev_portal(tmp_path_factory.mktemp("portal"), PORTAL_SESSION_IDLE_MINUTES="0.05",
                    PORTAL_REPORT_RATE_LIMIT="2 per minute") as idle:
        limited = _sibling(idle, "limited", PORTAL_LOGIN_RATE_LIMIT="3 per minute", PORTAL_SESSION_IDLE_MINUTES="15",
                           PORTAL_REPORT_RATE_LIMIT="10 per minute")
        start_portals(limited)
        try:
            yield Extra(idle, limited)
        finally:
            stop_portals(limited)


def _cookie_payload(portal: InProcessPortal, value: str | None) -> dict:
    """Decode (and check the signature of) the portal's session cookie."""
    if value is None:
        return {}
    app = Flask("cookie-reader")
    app.secret_key = portal.env["PORTAL_SECRET_KEY"]
    return SecureCookieSessionInterface().get_signing_serializer(app).loads(value)


def _dev_sign_in_steps(url: str, login: str, session: requests.Session) -> requests.Response:
    """Sign in at the dev provider; return the portal's callback response (not followed)."""
    form_page = session.get(f"{url}/auth/login", timeout=10)
    form = parse_form(form_page.text)
    form.fields.update(login=login, password=DEMO_PASSWORDS[login])
    to_callback = session.post(urljoin(form_page.url, form.action or form_page.url), data=form.fields,
                               allow_redirects=False, timeout=10)
    assert to_callback.is_redirect and "/auth/callback" in to_callback.headers["Location"]
    return session.get(urljoin(to_callback.url, to_callback.headers["Location"]), allow_redirects=False, timeout=10)


# --- Session id and cookies ----------------------------------------------------------------------------------

def test_session_id_is_rotated_at_sign_in(portal: InProcessPortal) -> None:
    browser = requests.Session()
    browser.get(portal.url + "/auth/login", allow_redirects=False, timeout=10)
    before = browser.cookies.get("portal")
    assert before, "starting sign-in stores its state in the session cookie"
    assert "sid" not in _cookie_payload(portal, before)

    callback = _dev_sign_in_steps(portal.url, "alice", browser)
    assert callback.status_code == 302
    after = browser.cookies.get("portal")
    assert after and after != before
    first_sid = _cookie_payload(portal, after)["sid"]
    assert browser.get(portal.url + "/api/v1/me", timeout=10).status_code == 200

    # Session fixation: the cookie the browser held before sign-in grants nothing afterwards.
    planted = requests.Session()
    planted.cookies.set("portal", before)
    assert planted.get(portal.url + "/api/v1/me", timeout=10).status_code == 401

    # Signing in again in the same browser gives yet another session id.
    _dev_sign_in_steps(portal.url, "alice", browser)
    second_sid = _cookie_payload(portal, browser.cookies.get("portal"))["sid"]
    assert second_sid != first_sid


def _set_cookie_headers(response: requests.Response) -> list[str]:
    return [value for key, value in response.raw.headers.items() if key.lower() == "set-cookie"]


def test_session_cookie_is_httponly_and_samesite_lax(portal: InProcessPortal) -> None:
    browser = requests.Session()
    start = browser.get(portal.url + "/auth/login", allow_redirects=False, timeout=10)
    callback = _dev_sign_in_steps(portal.url, "alice", browser)
    for response in (start, callback):
        cookies = [c for c in _set_cookie_headers(response) if c.startswith("portal=")]
        assert cookies, f"no session cookie set by {response.url}"
        for cookie in cookies:
            attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
            assert "httponly" in attributes, cookie
            assert attributes.get("samesite") == "SameSite=Lax", cookie
            assert attributes.get("path") == "Path=/", cookie


# --- Headers -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def alice(portal: InProcessPortal) -> requests.Session:
    return sign_in(portal.url, "alice")


@pytest.mark.parametrize("path", ["/", "/auth/signin", "/chart", "/api/v1/me"])
def test_security_headers(portal: InProcessPortal, alice: requests.Session, path: str) -> None:
    response = alice.get(portal.url + path, timeout=10)
    assert response.status_code == 200
    headers = response.headers
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in headers["Content-Security-Policy"].split(";") if d.strip()}
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "unsafe-eval" not in headers["Content-Security-Policy"]
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"
    assert csp["style-src"] == "style-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["object-src"] == "object-src 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] in {"same-origin", "no-referrer", "strict-origin-when-cross-origin"}
    assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", ["/chart", "/chart/access-log", "/api/v1/me/chart", "/chart/fhir"])
def test_chart_pages_are_not_cached(portal: InProcessPortal, alice: requests.Session, path: str) -> None:
    response = alice.get(portal.url + path, timeout=10)
    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]


def test_no_inline_script_or_style_in_pages(alice: requests.Session, portal: InProcessPortal) -> None:
    """The CSP forbids inline code, so the pages must not rely on it."""
    html = alice.get(portal.url + "/chart", timeout=10).text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " style=" not in html and "<style" not in html


# --- CSRF ----------------------------------------------------------------------------------------------------

def test_logout_without_csrf_token_is_refused(portal: InProcessPortal) -> None:
    browser = sign_in(portal.url, "alice")
    for data in ({}, {"csrf_token": "forged"}):
        response = browser.post(portal.url + "/auth/logout", data=data, allow_redirects=False, timeout=10)
        assert response.status_code == 400
        assert 'data-error-code="csrf"' in response.text
    # The refused post did not sign anyone out.
    assert browser.get(portal.url + "/api/v1/me", timeout=10).status_code == 200


def test_csrf_token_of_another_session_is_refused(portal: InProcessPortal, alice: requests.Session) -> None:
    other = sign_in(portal.url, "bob")
    token = csrf_token(alice, portal.url + "/chart")
    response = other.post(portal.url + "/auth/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert other.get(portal.url + "/api/v1/me", timeout=10).status_code == 200


def test_note_form_without_csrf_token_is_refused(portal: InProcessPortal) -> None:
    clinician = sign_in(portal.url, "dr.chen")
    chart_url = f"{portal.url}/patients/{ALICE}"
    assert clinician.get(chart_url, timeout=10).status_code == 200
    title = f"CSRF probe {time.time_ns()}"
    response = clinician.post(chart_url + "/notes", data={"title": title, "text": "must not be saved"},
                              allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert 'data-error-code="csrf"' in response.text
    assert title not in clinician.get(chart_url, timeout=10).text

    # With the page's token the same form is accepted (so the refusal above was about CSRF only).
    token = csrf_token(clinician, chart_url)
    accepted = clinician.post(chart_url + "/notes", data={"title": title, "text": "saved", "csrf_token": token},
                              allow_redirects=False, timeout=10)
    assert accepted.status_code == 302
    assert title in clinician.get(chart_url, timeout=10).text


def test_json_post_without_csrf_header_is_refused(portal: InProcessPortal) -> None:
    clinician = sign_in(portal.url, "dr.chen")
    chart_url = f"{portal.url}/patients/{ALICE}"
    title = f"JSON CSRF probe {time.time_ns()}"
    refused = clinician.post(f"{portal.url}/api/v1/patients/{ALICE}/notes", timeout=10,
                             json={"title": title, "text": "must not be saved"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "csrf"
    assert title not in clinician.get(chart_url, timeout=10).text


def test_socketio_refuses_a_page_from_another_origin(extra: Extra) -> None:
    url = extra.idle.url  # a real server: the origin is checked by the Socket.IO server, before the application
    browser = sign_in(url, "dr.okafor")  # not dr.chen, whose idle time-outs a test below counts
    with pytest.raises(socketio.exceptions.ConnectionError):
        ChatClient(url, browser, origin="https://attacker.example").connect()
    ChatClient(url, browser, origin=url).connect().close()  # the portal's own origin is fine


def test_patient_search_is_rate_limited(portal: InProcessPortal) -> None:
    """Search lists other people's names: no bulk harvesting (60 per minute per client)."""
    clinician = sign_in(portal.url, "dr.chen")
    statuses = [clinician.get(f"{portal.url}/api/v1/patients", params={"mrn": f"RC-{n:06d}"}, timeout=10).status_code
                for n in range(61)]
    assert set(statuses[:60]) <= {200} and statuses[60] == 429


# --- Idle time-out -------------------------------------------------------------------------------------------

def test_idle_session_is_signed_out(extra: Extra) -> None:
    url = extra.idle.url
    browser = sign_in(url, "alice")
    me = browser.get(url + "/api/v1/me", timeout=10).json()

    # Activity keeps the session alive past the idle limit (3 s) ...
    for _ in range(5):
        time.sleep(1)
        assert browser.get(url + "/chart", allow_redirects=False, timeout=10).status_code == 200

    # ... inactivity ends it.
    time.sleep(4)
    response = browser.get(url + "/chart", allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/signin?reason=idle_timeout")
    page = browser.get(urljoin(url, response.headers["Location"]), timeout=10)
    assert "inactivity" in page.text
    assert browser.get(url + "/api/v1/me", timeout=10).status_code == 401

    events = [e for e in audit_rows(extra.idle.env["PORTAL_DATABASE_URL"], action="signout.idle_timeout")
              if e["actor_id"] == me["id"]]
    assert len(events) == 1
    assert events[0]["reason"] == "idle_timeout"


def test_an_idle_sessions_open_connection_is_cut_without_waiting_for_its_next_event(extra: Extra) -> None:
    """A page left open past the idle time-out stops receiving anything: the worker cuts its socket."""
    url = extra.idle.url
    browser = sign_in(url, "dr.chen")
    me = browser.get(url + "/api/v1/me", timeout=10).json()
    client = ChatClient(url, browser).connect()
    try:
        ended = client.wait_for("session_ended", timeout=3 + 5)  # the 3 s limit, then the next sweep
        assert ended[0]["reason"] == "idle_timeout"
        deadline = time.monotonic() + 2
        while client.sio.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.sio.connected
    finally:
        client.close()
    assert browser.get(url + "/api/v1/me", timeout=10).status_code == 401
    events = [e for e in audit_rows(extra.idle.env["PORTAL_DATABASE_URL"], action="signout.idle_timeout")
              if e["actor_id"] == me["id"]]
    assert len(events) == 1


def test_a_session_ends_at_its_absolute_lifetime_even_when_active(portal: InProcessPortal) -> None:
    browser = sign_in(portal.url, "bob")
    me = browser.get(portal.url + "/api/v1/me", timeout=10).json()
    with writing(portal.database) as conn:  # started 12 h 1 min ago (the default PORTAL_SESSION_MAX_HOURS is 12)
        conn.execute(sa.update(LoginSession.__table__).where(LoginSession.__table__.c.user_id == me["id"])
                     .values(created_at=datetime.now(timezone.utc) - timedelta(hours=12, minutes=1)))
    response = browser.get(portal.url + "/chart", allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/signin?reason=session_expired")
    events = [e for e in audit_rows(portal.database, action="signout.session_expired")
              if e["actor_id"] == me["id"]]
    assert len(events) == 1


# --- Rate limit ----------------------------------------------------------------------------------------------

def test_login_is_rate_limited_with_a_friendly_page(extra: Extra) -> None:
    url = extra.limited.url
    statuses = [requests.get(url + "/auth/login", allow_redirects=False, timeout=10).status_code for _ in range(3)]
    assert statuses == [302, 302, 302]
    refused = requests.get(url + "/auth/login", allow_redirects=False, timeout=10)
    assert refused.status_code == 429
    assert refused.headers["Content-Type"].startswith("text/html")
    assert "Too many attempts" in refused.text
    assert "Traceback" not in refused.text
    assert int(refused.headers["Retry-After"]) > 0
    # Other pages are not limited.
    assert requests.get(url + "/auth/signin", timeout=10).status_code == 200


def test_accountings_of_disclosures_are_rate_limited_per_person(extra: Extra) -> None:
    """Each report verifies the whole audit log, so one person cannot keep a worker busy with them."""
    url = extra.idle.url  # (its 3-second idle time-out does not matter to these quick requests)
    alice, bob = sign_in(url, "alice"), sign_in(url, "bob")
    statuses = [alice.get(url + "/me/disclosures", timeout=30).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert bob.get(url + "/me/disclosures", timeout=30).status_code == 200  # per person, not per address


def test_a_forged_callback_link_does_not_sign_anyone_out(portal):
    session = sign_in(portal.url, "alice")
    forged = session.get(portal.url + "/auth/callback?error=access_denied", timeout=10)
    assert forged.status_code == 400
    assert session.get(portal.url + "/api/v1/me", timeout=10).status_code == 200


@pytest.mark.parametrize("forged_query", ["error=access_denied", "error=access_denied&state=forged",
                                          "code=stolen&state=forged"])
def test_a_forged_callback_link_neither_cancels_nor_fails_a_pending_step_up(portal, forged_query):
    """Only the provider's answer to this browser's own request (its state) can end a sign-in or a step-up."""
    reyes = sign_in(portal.url, "dr.reyes")
    reason = "Covering the on-call shift tonight"
    asked = reyes.post(f"{portal.url}/patients/{ALICE}/break-glass", timeout=10,
                       data={"csrf_token": csrf_token(reyes, f"{portal.url}/"), "reason": reason})
    step_up_failures = len(audit_rows(portal.database, action="stepup.failure"))

    forged = reyes.get(f"{portal.url}/auth/callback?{forged_query}", timeout=10)
    assert forged.status_code == 400 and "stale or was tampered with" in forged.text
    assert audit_rows(portal.database, action="signin.failure", reason="state_mismatch")
    assert len(audit_rows(portal.database, action="stepup.failure")) == step_up_failures
    confirm = sign_in_again(reyes, asked, "dr.reyes")  # the real answer still completes the step-up
    assert 'id="step-up-confirmed"' in confirm.text and reason in confirm.text


def test_only_the_portals_own_links_start_a_step_up(portal):
    """Another site cannot start a step-up (and choose where the fresh sign-in leads, an export say), nor
    replace one in progress: the link must carry this browser session's own token."""
    reyes = sign_in(portal.url, "dr.reyes")
    reason = "Covering the on-call shift tonight"
    asked = reyes.post(f"{portal.url}/patients/{ALICE}/break-glass", timeout=10,
                       data={"csrf_token": csrf_token(reyes, f"{portal.url}/"), "reason": reason})
    genuine = asked.history[0].headers["Location"]
    assert genuine.startswith("/auth/step-up?action=break_glass") and "token=" in genuine

    for forged in ("/auth/step-up?action=audit_export&next=/compliance/",
                   "/auth/step-up?action=audit_export&next=/compliance/&token=forged"):
        refused = reyes.get(portal.url + forged, allow_redirects=False, timeout=10)
        assert refused.status_code == 400 and "not valid" in refused.text, forged
    other = sign_in(portal.url, "dr.reyes")  # the same person's other browser: its links are its own
    assert other.get(portal.url + genuine, allow_redirects=False, timeout=10).status_code == 400
    confirm = sign_in_again(reyes, asked, "dr.reyes")  # the step-up in progress is untouched
    assert 'id="step-up-confirmed"' in confirm.text and reason in confirm.text
