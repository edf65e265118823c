"""The npm OpenID Provider works on its own: discovery, code + PKCE, signed ID token with portal claims."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import Token

from tests.support.npm_idp import NpmOidcProvider, pkce_pair, sign_in_with_requests, sign_out_with_requests

pytestmark = pytest.mark.oidc

REDIRECT_URI = "http://127.0.0.1:9/callback"
POST_LOGOUT_URI = "http://127.0.0.1:9/signed-out"
CLIENTS = [
    {
        "client_id": f"portal-{alg.lower()}",
        "client_secret": "smoke-secret",
        "redirect_uris": [REDIRECT_URI],
        "post_logout_redirect_uris": [POST_LOGOUT_URI],
        "id_token_signed_response_alg": alg,
    }
    for alg in ("RS256", "ES256")
]
ACCOUNTS = {
    "alice": {
        "name": "Alice Patient",
        "email": "alice@example.test",
        "email_verified": True,
        "roles": ["patient"],
        "patient_id": "P-0001",
    },
}


@pytest.fixture(scope="module")
def idp() -> Iterator[NpmOidcProvider]:
    with NpmOidcProvider(CLIENTS, ACCOUNTS, ttl={"IdToken": 120}) as provider:
        yield provider


def sign_in(idp: NpmOidcProvider, client_id: str, session: requests.Session) -> tuple[dict, dict, Token]:
    """Run the code + PKCE flow; return (token response, discovery, verified ID token)."""
    meta = requests.get(idp.discovery_url, timeout=5).json()
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = urlencode({
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email roles patient_id",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    })
    redirect = sign_in_with_requests(session, f"{meta['authorization_endpoint']}?{query}", "alice")
    location = redirect.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == state
    assert params["iss"] == idp.issuer

    tokens = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI,
              "code_verifier": verifier},
        auth=(client_id, "smoke-secret"),
        timeout=5,
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    id_token = verify_id_token(meta, body["id_token"], client_id)
    assert id_token.claims["nonce"] == nonce
    return body, meta, id_token


def verify_id_token(meta: dict, id_token: str, client_id: str) -> Token:
    """Verify signature (against the published JWKS), iss, aud and exp."""
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=5).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
    ).validate(token.claims)
    return token


def test_discovery_document(idp: NpmOidcProvider) -> None:
    meta = requests.get(idp.discovery_url, timeout=5).json()
    assert meta["issuer"] == idp.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["end_session_endpoint"].startswith(idp.issuer)
    assert {"roles", "patient_id", "email", "name"} <= set(meta["claims_supported"])
    assert {"RS256", "ES256"} <= set(meta["id_token_signing_alg_values_supported"])


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_code_pkce_flow_id_token_has_portal_claims(idp: NpmOidcProvider, alg: str) -> None:
    body, meta, id_token = sign_in(idp, f"portal-{alg.lower()}", requests.Session())
    claims = id_token.claims
    assert id_token.header["alg"] == alg
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["patient"]
    assert claims["patient_id"] == "P-0001"
    assert claims["email"] == "alice@example.test"

    userinfo = requests.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {body['access_token']}"},
                            timeout=5).json()
    assert userinfo["roles"] == ["patient"] and userinfo["patient_id"] == "P-0001"


def test_pkce_is_required(idp: NpmOidcProvider) -> None:
    meta = requests.get(idp.discovery_url, timeout=5).json()
    query = urlencode({"client_id": "portal-rs256", "response_type": "code", "redirect_uri": REDIRECT_URI,
                       "scope": "openid", "state": "s"})
    response = requests.get(f"{meta['authorization_endpoint']}?{query}", allow_redirects=False, timeout=5)
    assert response.is_redirect
    error = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert error["error"] == "invalid_request"
    assert "PKCE" in error["error_description"]


def test_rp_initiated_logout_redirects_back(idp: NpmOidcProvider) -> None:
    session = requests.Session()
    body, meta, _ = sign_in(idp, "portal-rs256", session)
    query = urlencode({"id_token_hint": body["id_token"], "post_logout_redirect_uri": POST_LOGOUT_URI, "state": "bye"})
    response = sign_out_with_requests(session, f"{meta['end_session_endpoint']}?{query}")
    assert response.is_redirect
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=bye"


def test_restart_with_rotated_keys_signs_with_a_new_kid() -> None:
    with NpmOidcProvider(CLIENTS, ACCOUNTS) as provider:
        issuer, old_kids = provider.issuer, provider.signing_kids()
        provider.restart(rotate_keys=True)
        assert provider.issuer == issuer
        assert provider.signing_kids()[2:] == old_kids
        _, _, id_token = sign_in(provider, "portal-rs256", requests.Session())
        kid = id_token.header["kid"]
        assert kid == provider.signing_kids()[0]
        assert kid not in old_kids
