"""The portal verifies ID tokens itself: tampered tokens from an otherwise real sign-in are refused.

The real npm provider does the login; the TamperProxy (tests/support/tamper_proxy.py) is the issuer
the portal trusts, and re-issues the provider's genuine ID token signed with keys this module
controls, tampered as each test asks.
"""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, portal_env, prepare_database
from tests.support.tamper_proxy import TamperProxy

pytestmark = pytest.mark.oidc

CLIENT_ID = "portal-behind-proxy"
SECRET = secrets.token_urlsafe(32)


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    proxy: TamperProxy
    portal: PortalServer
    database_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    npm_idp.require_npm_idp()
    tmp = tmp_path_factory.mktemp("oidc-tamper")
    port = free_port()
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    client = npm_idp.portal_client(CLIENT_ID, SECRET, f"http://127.0.0.1:{port}", "RS256")
    with npm_idp.NpmOidcProvider([client], npm_idp.demo_accounts()) as idp, TamperProxy(idp.issuer, CLIENT_ID, SECRET) as proxy:
        env = portal_env(tmp, database_url, port, **npm_idp.portal_oidc_env(proxy.issuer, CLIENT_ID, SECRET))
        prepare_database(env)
        portal = PortalServer(env, port, tmp / "portal.log").start()
        try:
            yield Stack(idp, proxy, portal, database_url)
        finally:
            npm_idp.stop_portals(portal)


@pytest.fixture(autouse=True)
def honest_proxy(stack: Stack) -> Iterator[TamperProxy]:
    stack.proxy.mode, stack.proxy.alg = "honest", "RS256"
    yield stack.proxy
    stack.proxy.mode, stack.proxy.alg = "honest", "RS256"
    assert stack.proxy.errors == [], "the proxy was handed an ID token it could not verify"


def _sign_in(stack: Stack, login: str = "demo-alice"):
    rid = uuid.uuid4().hex
    issued_before = len(stack.proxy.issued)
    session, response = npm_idp.sign_in_portal(stack.portal.url, login, headers={"X-Request-ID": rid})
    return session, response, rid, stack.proxy.issued[issued_before:]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_honest_tokens_are_accepted(stack: Stack, alg: str) -> None:
    stack.proxy.alg = alg
    session, response, rid, issued = _sign_in(stack)
    assert response.status_code == 302, response.text[:500]
    assert [token["header"]["alg"] for token in issued] == [alg]
    assert issued[0]["claims"]["iss"] == stack.proxy.issuer
    assert session.get(stack.portal.url + "/", timeout=10).url == stack.portal.url + "/chart"
    me = session.get(stack.portal.url + "/api/v1/me", timeout=10).json()
    assert me["roles"] == ["patient"]
    assert [e["action"] for e in audit_rows(stack.database_url, request_id=rid)] == ["signin.success"]


@pytest.mark.parametrize("mode, alg, reason", [
    ("wrong_nonce", "RS256", "id_token_invalid_claim"),
    ("wrong_aud", "RS256", "id_token_invalid_claim"),
    ("wrong_aud_azp", "RS256", "id_token_invalid_claim"),
    ("wrong_iss", "RS256", "id_token_invalid_claim"),
    ("expired", "RS256", "id_token_expired_token"),
    ("expired", "ES256", "id_token_expired_token"),
    ("alg_none", "RS256", "id_token_unsupported_algorithm"),
    ("hs256_secret", "RS256", "id_token_unsupported_algorithm"),
    ("tampered_payload", "RS256", "id_token_bad_signature"),
    ("tampered_payload", "ES256", "id_token_bad_signature"),
    ("foreign_key", "RS256", "id_token_bad_signature"),
    ("foreign_key", "ES256", "id_token_bad_signature"),
    ("unknown_kid", "RS256", "id_token_invalid_key_id"),
    ("no_id_token", "RS256", "id_token_missing"),
])
def test_tampered_tokens_are_refused(stack: Stack, mode: str, alg: str, reason: str) -> None:
    stack.proxy.mode, stack.proxy.alg = mode, alg
    sessions_before = npm_idp.table_count(stack.database_url, "login_session")
    session, response, rid, issued = _sign_in(stack)
    assert [token["mode"] for token in issued] == ([] if mode == "no_id_token" else [mode])
    npm_idp.assert_signin_refused(stack.portal.url, stack.database_url, session, response, 400, reason, rid)
    assert npm_idp.table_count(stack.database_url, "login_session") == sessions_before
    assert "Adam" not in response.text


def test_jwks_is_fetched_again_for_a_new_kid(stack: Stack) -> None:
    """Key rotation at the issuer: the new kid is unknown to the portal's cached JWKS until it refetches."""
    proxy = stack.proxy
    _, first, _, _ = _sign_in(stack)
    assert first.status_code == 302
    fetches = proxy.jwks_requests

    new_kid = proxy.rotate("RS256")
    session, response, _, issued = _sign_in(stack, "demo-chen")
    assert response.status_code == 302, response.text[:500]
    assert issued[0]["header"]["kid"] == new_kid
    assert proxy.jwks_requests == fetches + 1
    assert session.get(stack.portal.url + "/", timeout=10).url == stack.portal.url + "/clinician"

    # Cached again: the next sign-in with the same key does not fetch the JWKS.
    _, again, _, _ = _sign_in(stack)
    assert again.status_code == 302
    assert proxy.jwks_requests == fetches + 1


def test_unknown_kid_is_refused_after_one_refetch(stack: Stack) -> None:
    stack.proxy.mode = "unknown_kid"
    fetches = stack.proxy.jwks_requests
    session, response, rid, _ = _sign_in(stack)
    npm_idp.assert_signin_refused(stack.portal.url, stack.database_url, session, response, 400, "id_token_invalid_key_id", rid)
    assert stack.proxy.jwks_requests == fetches + 1
