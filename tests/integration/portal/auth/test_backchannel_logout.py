"""OpenID Connect Back-Channel Logout against the real npm provider, on two workers sharing PostgreSQL and Redis.

When a person signs out at the provider, the provider posts a signed logout token to the portal's
``/auth/backchannel-logout``: every portal session of that provider session ends at once, on every
worker, and their open Socket.IO connections are told why and cut. A forged, replayed, expired or
mis-addressed token gets 400, is audited, and ends nothing.

Skipped unless PORTAL_TEST_POSTGRES_URL / PORTAL_TEST_REDIS_URL name running services (CI sets both).
"""
from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.chat import ChatClient
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, another_worker, csrf_token, portal_env, prepare_database
from tests.support.shared_services import create_database, drop_database, postgres_server_url, redis_url

pytestmark = [pytest.mark.oidc, pytest.mark.postgres]

CLIENT_ID = "portal-backchannel"
SECRET = secrets.token_urlsafe(32)
EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    first: PortalServer
    second: PortalServer
    database_url: str

    @property
    def logout_url(self) -> str:
        return f"{self.first.url}/auth/backchannel-logout"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    npm_idp.require_npm_idp()
    postgres_server_url()  # skipped (failed in CI) without PostgreSQL or Redis
    queue = redis_url()
    tmp = tmp_path_factory.mktemp("backchannel")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = {**npm_idp.portal_client(CLIENT_ID, SECRET, url), "backchannel_logout_uri": f"{url}/auth/backchannel-logout",
              "backchannel_logout_session_required": True}
    database_url = create_database()
    try:
        with npm_idp.NpmOidcProvider([client], npm_idp.demo_accounts()) as idp:
            env = portal_env(tmp, database_url, port, **npm_idp.portal_oidc_env(idp.issuer, CLIENT_ID, SECRET),
                             PORTAL_MESSAGE_QUEUE=queue)
            prepare_database(env, patients=4)
            first = PortalServer(env, port, tmp / "first.log")
            second = another_worker(first)
            npm_idp.start_portals(first, second)
            try:
                yield Stack(idp, first, second, database_url)
            finally:
                npm_idp.stop_portals(first, second)
    finally:
        drop_database(database_url)


def _signed_in(portal_url: str, login: str, session: requests.Session | None = None) -> requests.Session:
    session, response = npm_idp.sign_in_portal(portal_url, login, session)
    assert response.status_code == 302, response.text[:300]
    return session


def _same_browser_again(browser: requests.Session, portal: PortalServer) -> requests.Session:
    """Another tab's portal session within the same provider session (single sign-on: no form)."""
    tab = requests.Session()
    for cookie in browser.cookies:
        if cookie.name != "portal":
            tab.cookies.set_cookie(cookie)
    landed = tab.get(f"{portal.url}/auth/login", timeout=15)
    assert landed.status_code == 200 and "/auth/" not in landed.url, landed.url
    return tab


def _signed_in_state(session: requests.Session, portal: PortalServer) -> int:
    return session.get(f"{portal.url}/api/v1/me", timeout=10).status_code


def _cut_within(client: ChatClient, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while client.sio.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    return not client.sio.connected


def test_signing_out_at_the_provider_ends_that_provider_sessions_portal_sessions_on_every_worker(stack: Stack) -> None:
    browser = _signed_in(stack.first.url, "demo-chen")
    tab = _same_browser_again(browser, stack.second)
    phone = _signed_in(stack.first.url, "demo-chen")  # another provider session of the same person
    sockets = [ChatClient(stack.first.url, browser).connect(),
               ChatClient(stack.second.url, tab, origin=stack.first.url).connect(),
               ChatClient(stack.first.url, phone).connect()]
    try:
        npm_idp.sign_out_with_requests(browser, f"{stack.idp.issuer}/session/end")
        for client in sockets[:2]:
            ended = client.wait_for("session_ended", timeout=1.0)
            assert ended[0]["reason"] == "provider_logout"
            assert _cut_within(client, 1.0), "the socket was told but not disconnected"
        assert _signed_in_state(browser, stack.first) == 401
        assert _signed_in_state(tab, stack.second) == 401
        assert _signed_in_state(phone, stack.first) == 200 and sockets[2].sio.connected
        assert sockets[2].received("session_ended") == []
        logged = audit_rows(stack.database_url, action="signout.backchannel", outcome="allowed")[-1]
        assert json.loads(logged["details"]) == {"sessions": 2, "by": "sid"}
        page = browser.get(f"{stack.first.url}/chart", timeout=10)
        assert "/auth/signin" in page.url
    finally:
        for client in sockets:
            client.close()


# --------------------------------------------------------------------------- forged and replayed tokens


def _provider_key(stack: Stack) -> RSAKey:
    keys = json.loads(stack.idp.jwks_path.read_text())["keys"]
    return KeySet.import_key_set({"keys": [key for key in keys if key["alg"] == "RS256"][:1]}).keys[0]


def _claims(stack: Stack, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": stack.idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
              "sub": "demo-okafor", "events": {EVENT: {}}}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _signed(stack: Stack, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    key = _provider_key(stack)
    return jwt.encode(header or {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}, claims, key)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


FORGERIES: dict[str, tuple[Callable[[Stack], str], str]] = {
    "not a JWT": (lambda s: "not-a-token", "logout_token_decode_error"),
    "no token at all": (lambda s: "", "logout_token_decode_error"),
    "signed by another key": (lambda s: jwt.encode({"alg": "RS256", "kid": _provider_key(s).kid}, _claims(s),
                                                   RSAKey.generate_key(2048)), "logout_token_bad_signature"),
    "alg none": (lambda s: f"{_b64({'alg': 'none'})}.{_b64(_claims(s))}.", "logout_token_unsupported_algorithm"),
    "HS256 with the client secret": (lambda s: jwt.encode({"alg": "HS256"}, _claims(s), OctKey.import_key(SECRET)),
                                     "logout_token_unsupported_algorithm"),
    "another issuer": (lambda s: _signed(s, _claims(s, iss="https://idp.example.test")), "logout_token_invalid_claim"),
    "another audience": (lambda s: _signed(s, _claims(s, aud="someone-else")), "logout_token_invalid_claim"),
    "expired": (lambda s: _signed(s, _claims(s, iat=int(time.time()) - 900, exp=int(time.time()) - 600)),
                "logout_token_expired_token"),
    "issued long ago": (lambda s: _signed(s, _claims(s, iat=int(time.time()) - 900)), "logout_token_too_old"),
    "no exp": (lambda s: _signed(s, _claims(s, exp=None)), "logout_token_missing_claim"),
    "no jti": (lambda s: _signed(s, _claims(s, jti=None)), "logout_token_missing_claim"),
    "no event": (lambda s: _signed(s, _claims(s, events=None)), "logout_token_no_event"),
    "another event": (lambda s: _signed(s, _claims(s, events={"urn:example:other": {}})), "logout_token_no_event"),
    "a nonce (an ID token)": (lambda s: _signed(s, _claims(s, nonce="n-0S6_WzA2Mj")), "logout_token_nonce"),
    "neither sid nor sub": (lambda s: _signed(s, _claims(s, sub=None)), "logout_token_no_subject"),
}


@pytest.fixture
def victim(stack: Stack) -> Iterator[tuple[requests.Session, ChatClient]]:
    """Dr Okafor, signed in with a chat connection open on the second worker."""
    session = _signed_in(stack.first.url, "demo-okafor")
    client = ChatClient(stack.second.url, session, origin=stack.first.url).connect()
    yield session, client
    client.close()


@pytest.mark.parametrize("case", list(FORGERIES))
def test_a_forged_or_malformed_logout_token_is_refused_and_ends_nothing(stack: Stack, victim, case: str) -> None:
    session, client = victim
    make, code = FORGERIES[case]
    response = requests.post(stack.logout_url, data={"logout_token": make(stack)}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request" and response.headers["Cache-Control"] == "no-store"
    assert audit_rows(stack.database_url, action="signout.backchannel")[-1]["reason"] == code
    assert _signed_in_state(session, stack.first) == 200
    time.sleep(0.2)
    assert client.sio.connected and client.received("session_ended") == []


def test_a_valid_logout_token_by_subject_works_once_and_a_replay_is_refused(stack: Stack, victim) -> None:
    session, client = victim
    token = _signed(stack, _claims(stack))
    assert requests.post(stack.logout_url, data={"logout_token": token}, timeout=10).status_code == 200
    assert client.wait_for("session_ended", timeout=1.0)[0]["reason"] == "provider_logout"
    assert _signed_in_state(session, stack.first) == 401

    again = _signed_in(stack.first.url, "demo-okafor")
    replayed = requests.post(stack.logout_url, data={"logout_token": token}, timeout=10)
    assert replayed.status_code == 400
    assert audit_rows(stack.database_url, action="signout.backchannel")[-1]["reason"] == "logout_token_replayed"
    assert _signed_in_state(again, stack.first) == 200


# --------------------------------------------------------------------------- revocation and single sign-on


def test_after_an_administrator_ends_a_users_sessions_the_providers_remembered_sign_in_is_not_enough(
        stack: Stack) -> None:
    laptop = _signed_in(stack.first.url, "demo-reyes")  # a lost laptop: it keeps the provider's session cookie
    reyes_id = laptop.get(f"{stack.first.url}/api/v1/me", timeout=10).json()["id"]
    adam = _signed_in(stack.first.url, "demo-adam")
    ended = adam.post(f"{stack.first.url}/admin/users/{reyes_id}/sessions/end", timeout=10,
                      data={"csrf_token": csrf_token(adam, f"{stack.first.url}/admin/sessions")})
    assert ended.status_code == 200 and _signed_in_state(laptop, stack.first) == 401

    # Single sign-on alone would let the laptop straight back in: on either worker, the portal asks
    # the provider for the password on the very first redirect ...
    for portal in (stack.first, stack.second):
        start = laptop.get(f"{portal.url}/auth/login", allow_redirects=False, timeout=15)
        query = parse_qs(urlsplit(start.headers["Location"]).query)
        assert query["prompt"] == ["login"] and query["max_age"] == ["0"], start.headers["Location"]
    asked = laptop.get(start.headers["Location"], timeout=15)
    assert "/interaction/" in asked.url, "the provider did not ask for the password"
    assert _signed_in_state(laptop, stack.first) == 401

    # ... which works (auth_time counts whole seconds, so the sign-in must fall in a later second).
    time.sleep(1.02 - time.time() % 1)
    back = npm_idp.sign_in_with_requests(laptop, asked.url, "demo-reyes")
    laptop.get(back.headers["Location"], timeout=15)
    assert _signed_in_state(laptop, stack.first) == 200
    assert _signed_in_state(laptop, stack.second) == 200
