"""Signing in after a session was ended, against the independent npm provider, over real HTTP.

The npm ``oidc-provider`` states ``auth_time`` in the ID token only when the request carries
``max_age`` or ``prompt=login`` (its default, which many providers share). Ending a session sets
``sessions_not_before`` on the user for good, so a portal that sent plain sign-ins could never tell a
new sign-in from the provider's remembered one, and refused every later sign-in of that person.

What the portal does instead:
* every sign-in carries ``max_age``, so the provider states ``auth_time``: a new browser, where the
  person types their password, is let in at once;
* the browser whose session was ended (it may be the lost laptop) still holds that session's portal
  cookie: its next sign-in asks the provider for the password (``prompt=login``, ``max_age=0``) on
  the first redirect, and succeeds after it;
* a browser the portal cannot recognise (say the laptop with its portal cookie cleared) that comes
  back on the provider's remembered sign-in from before the revocation gets no session: the portal
  sends it straight back to the provider for the password.
"""
from __future__ import annotations

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

pytestmark = pytest.mark.oidc

CLIENT_ID = "portal-revocation"
SECRET = secrets.token_urlsafe(32)
SESSION_MAX_AGE = str(12 * 3600)  # PORTAL_SESSION_MAX_HOURS' default, in seconds


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    portal: PortalServer

    @property
    def url(self) -> str:
        return self.portal.url

    @property
    def database_url(self) -> str:
        return self.portal.env["PORTAL_DATABASE_URL"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("revocation")
    port = free_port()
    client = npm_idp.portal_client(CLIENT_ID, SECRET, f"http://127.0.0.1:{port}")
    with npm_idp.NpmOidcProvider([client], npm_idp.demo_accounts()) as idp:
        env = portal_env(tmp, f"sqlite:///{tmp / 'portal.db'}", port, **npm_idp.portal_oidc_env(idp.issuer, CLIENT_ID, SECRET))
        prepare_database(env, patients=4)
        with PortalServer(env, port, tmp / "portal.log") as portal:
            yield Stack(idp, portal)


# --- helpers ---------------------------------------------------------------------------------------------------

def signed_in(stack: Stack, login: str) -> requests.Session:
    """A new browser signed in at the provider (its own provider session) and at the portal."""
    session, response = npm_idp.sign_in_portal(stack.url, login)
    assert response.status_code == 302, response.text[:300]
    assert me(stack, session).status_code == 200
    return session


def me(stack: Stack, session: requests.Session) -> requests.Response:
    return session.get(f"{stack.url}/api/v1/me", timeout=10)


def this_session_id(stack: Stack, session: requests.Session) -> str:
    page = session.get(f"{stack.url}/auth/sessions", timeout=10).text
    rows = re.findall(r'<tr data-session="([^"]+)"[^>]*>(.*?)</tr>', page, re.S)
    return next(session_id for session_id, row in rows if "This browser" in row)


def end_from_elsewhere(stack: Stack, owner: requests.Session, victim: requests.Session) -> None:
    """The owner ends the victim browser's session from their session list."""
    victim_id = this_session_id(stack, victim)
    ended = owner.post(f"{stack.url}/auth/sessions/{victim_id}/end", allow_redirects=False, timeout=10,
                       data={"csrf_token": csrf_token(owner, f"{stack.url}/auth/sessions")})
    assert ended.status_code == 302 and ended.headers["Location"] == "/auth/sessions"


def end_all_as_admin(stack: Stack, user_id: str) -> None:
    adam = signed_in(stack, "demo-adam")
    ended = adam.post(f"{stack.url}/admin/users/{user_id}/sessions/end", allow_redirects=False, timeout=10,
                      data={"csrf_token": csrf_token(adam, f"{stack.url}/admin/sessions")})
    assert ended.status_code == 302


def after_this_second() -> None:
    """Wait for the clock's next whole second: ``auth_time`` has whole seconds, so only a sign-in in a
    later second than the revocation provably happened after it (a person typing a password takes longer)."""
    time.sleep(1.02 - time.time() % 1)


def first_redirect(stack: Stack, session: requests.Session, next_path: str | None = None) -> tuple[str, dict]:
    """Start a sign-in as the page's button does: where the portal sends the browser, and that URL's query."""
    start = session.get(f"{stack.url}/auth/login", params={"next": next_path} if next_path else None,
                        allow_redirects=False, timeout=10)
    assert start.status_code == 302, start.text[:300]
    location = start.headers["Location"]
    assert location.startswith(f"{stack.idp.issuer}/auth?"), location
    return location, parse_qs(urlsplit(location).query)


def at_provider(session: requests.Session, location: str) -> requests.Response:
    """Follow the authorization request: to the provider's password form, or (single sign-on) back to the portal."""
    return session.get(location, timeout=15)


def asks_for_password(response: requests.Response) -> bool:
    return "/interaction/" in response.url


def password_then_back(stack: Stack, session: requests.Session, form_page: requests.Response,
                       login: str) -> requests.Response:
    """Type the password at the provider; return the portal's answer to the callback (not followed)."""
    back = npm_idp.sign_in_with_requests(session, form_page.url, login)
    callback = back.headers["Location"]
    assert callback.startswith(f"{stack.url}/auth/callback"), callback
    return session.get(callback, allow_redirects=False, timeout=15)


# --- a new browser --------------------------------------------------------------------------------------------

def test_after_ending_another_session_a_new_browser_signs_in_plainly(stack: Stack) -> None:
    laptop, phone = signed_in(stack, "demo-alice"), signed_in(stack, "demo-alice")
    end_from_elsewhere(stack, phone, laptop)
    after_this_second()

    desktop = requests.Session()  # a browser that never saw the portal or the provider
    location, query = first_redirect(stack, desktop, next_path="/chart/access-log")
    assert query["max_age"] == [SESSION_MAX_AGE] and "prompt" not in query  # asks for auth_time, nothing more
    form = at_provider(desktop, location)
    assert asks_for_password(form)
    answer = password_then_back(stack, desktop, form, "demo-alice")

    assert answer.status_code == 302 and answer.headers["Location"] == "/chart/access-log", answer.text[:300]
    assert me(stack, desktop).status_code == 200
    assert me(stack, phone).status_code == 200 and me(stack, laptop).status_code == 401
    alice = me(stack, desktop).json()["id"]
    assert [row["outcome"] for row in audit_rows(stack.database_url, action="signin.failure", actor_id=alice)] == []


# --- the browser whose session was ended ------------------------------------------------------------------------

@pytest.mark.parametrize("first_visit", ["a page", "the sign-in link"])
def test_the_ended_browser_is_asked_for_the_password_on_the_first_redirect(stack: Stack, first_visit: str) -> None:
    laptop, phone = signed_in(stack, "demo-bob"), signed_in(stack, "demo-bob")
    end_from_elsewhere(stack, phone, laptop)
    if first_visit == "a page":  # the portal notices the ended session and sends the browser to sign in
        page = laptop.get(f"{stack.url}/chart", allow_redirects=False, timeout=10)
        assert page.headers["Location"].startswith("/auth/signin?reason=revoked")
    after_this_second()

    location, query = first_redirect(stack, laptop)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    form = at_provider(laptop, location)
    assert asks_for_password(form), "the provider signed the laptop in on its remembered sign-in"
    answer = password_then_back(stack, laptop, form, "demo-bob")

    assert answer.status_code == 302 and answer.headers["Location"] == "/", answer.text[:300]
    assert me(stack, laptop).status_code == 200
    # Signed in again: the next sign-in in this browser is an ordinary one.
    assert "prompt" not in first_redirect(stack, laptop)[1]


def test_after_an_administrator_ends_all_sessions_each_browser_signs_in_again(stack: Stack) -> None:
    laptop = signed_in(stack, "demo-reyes")  # the lost laptop: it keeps the provider's remembered sign-in
    reyes = me(stack, laptop).json()["id"]
    end_all_as_admin(stack, reyes)
    assert me(stack, laptop).status_code == 401
    after_this_second()

    location, query = first_redirect(stack, laptop)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    form = at_provider(laptop, location)
    assert asks_for_password(form)
    assert password_then_back(stack, laptop, form, "demo-reyes").status_code == 302
    assert me(stack, laptop).json()["id"] == reyes

    office = requests.Session()
    location, query = first_redirect(stack, office)
    assert "prompt" not in query
    answer = password_then_back(stack, office, at_provider(office, location), "demo-reyes")
    assert answer.status_code == 302 and me(stack, office).json()["id"] == reyes


# --- the protection stays ---------------------------------------------------------------------------------------

def test_the_providers_remembered_sign_in_from_before_the_revocation_starts_no_session(stack: Stack) -> None:
    """The lost laptop with its portal cookie cleared: the provider would sign it straight back in."""
    laptop = signed_in(stack, "demo-okafor")
    okafor = me(stack, laptop).json()["id"]
    end_all_as_admin(stack, okafor)
    laptop = without_portal_cookie(laptop)  # the provider's cookies stay
    after_this_second()

    location, query = first_redirect(stack, laptop)
    assert "prompt" not in query  # the portal cannot know this browser
    landed = at_provider(laptop, location)
    hops = {urlsplit(hop.url).path: hop for hop in landed.history if hop.url.startswith(stack.url)}
    assert hops["/auth/callback"].status_code == 302
    assert hops["/auth/callback"].headers["Location"].startswith("/auth/login?fresh=1")
    assert parse_qs(urlsplit(hops["/auth/login"].headers["Location"]).query)["prompt"] == ["login"]
    assert asks_for_password(landed), "the provider was not asked for the password"
    assert me(stack, laptop).status_code == 401  # no session on the remembered sign-in

    refused = audit_rows(stack.database_url, action="signin.failure", actor_id=okafor)
    assert [(row["outcome"], row["reason"]) for row in refused] == [("denied", "sign_in_again")]

    answer = password_then_back(stack, laptop, landed, "demo-okafor")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert me(stack, laptop).json()["id"] == okafor


def without_portal_cookie(browser: requests.Session) -> requests.Session:
    """The same browser with the portal's cookie deleted (the provider and portal share the host 127.0.0.1)."""
    cleared = requests.Session()
    for cookie in browser.cookies:
        if cookie.name != "portal":
            cleared.cookies.set_cookie(cookie)
    return cleared


# --- a provider whose clock is off ours --------------------------------------------------------------------------

@pytest.fixture
def skewed(tmp_path, request) -> Iterator[Stack]:
    """The same stack with the provider's clock ``request.param`` seconds ahead of the portal's (negative: behind)."""
    port = free_port()
    clients = [npm_idp.portal_client(CLIENT_ID, SECRET, f"http://127.0.0.1:{port}")]
    with npm_idp.NpmOidcProvider(clients, npm_idp.demo_accounts(), clock_skew_seconds=request.param) as idp:
        env = portal_env(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", port,
                         **npm_idp.portal_oidc_env(idp.issuer, CLIENT_ID, SECRET))
        prepare_database(env, patients=4)
        with PortalServer(env, port, tmp_path / "portal.log") as portal:
            yield Stack(idp, portal)


@pytest.mark.parametrize("skewed", [-120], indirect=True)
def test_a_provider_clock_behind_ours_does_not_lock_anyone_out(skewed: Stack) -> None:
    laptop, phone = signed_in(skewed, "demo-alice"), signed_in(skewed, "demo-alice")
    end_from_elsewhere(skewed, phone, laptop)
    after_this_second()
    desktop = requests.Session()
    location, _ = first_redirect(skewed, desktop)
    answer = password_then_back(skewed, desktop, at_provider(desktop, location), "demo-alice")
    assert answer.status_code == 302 and me(skewed, desktop).status_code == 200


@pytest.mark.parametrize("skewed", [120], indirect=True)
def test_a_provider_clock_ahead_of_ours_does_not_let_the_lost_laptop_back_in(skewed: Stack) -> None:
    laptop = signed_in(skewed, "demo-okafor")
    end_all_as_admin(skewed, me(skewed, laptop).json()["id"])
    laptop = without_portal_cookie(laptop)
    after_this_second()
    location, _ = first_redirect(skewed, laptop)
    landed = at_provider(laptop, location)
    assert asks_for_password(landed), "the provider's remembered sign-in from before the revocation was let in"
    assert me(skewed, laptop).status_code == 401
