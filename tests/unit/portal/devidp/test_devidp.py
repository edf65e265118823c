"""The development OpenID provider, driven over HTTP with the Flask test client as the portal would."""
from __future__ import annotations

import base64
import secrets
import stat
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.jose import JsonWebKey, jwt
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.discovery import OpenIDProviderMetadata
from flask import Flask

from portal import devidp
from portal.config import PROJECT_ROOT, Settings
from portal.devidp import store as devidp_store
from portal.devidp.keys import KEY_FILENAME
from portal.devidp.users import DEMO_USERS
from portal.extensions import csrf, limiter

BASE = "http://127.0.0.1:5000"
ISSUER = f"{BASE}/devidp"
CLIENT_ID = "portal"
CLIENT_SECRET = "portal-dev-secret-0123456789"
REDIRECT_URI = f"{BASE}/auth/callback"
ALICE_PATIENT_ID = "00000000-0000-4000-8000-000000000001"
ALICE_MRN = "RC-100001"


def make_settings(**overrides) -> Settings:
    values = dict(secret_key="x" * 40, oidc_issuer=ISSUER, oidc_client_id=CLIENT_ID,
                  oidc_client_secret=CLIENT_SECRET, keyring="k", audit_signing_key="a", dev_idp=True,
                  external_url=BASE)
    values.update(overrides)
    return Settings(**values)


def make_app(instance_path, csrf_enabled: bool = False, **overrides) -> Flask:
    app = Flask(__name__, template_folder=str(PROJECT_ROOT / "templates"), instance_path=str(instance_path))
    app.config.update(SECRET_KEY="x" * 40, WTF_CSRF_ENABLED=csrf_enabled, TESTING=True,
                      RATELIMIT_STORAGE_URI="memory://")
    csrf.init_app(app)
    limiter.init_app(app)
    devidp.init_app(app, make_settings(**overrides))
    return app


@pytest.fixture
def app(tmp_path) -> Flask:
    return make_app(tmp_path / "instance")


@pytest.fixture
def client(app):
    return app.test_client()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def authorize_params(challenge: str, **overrides) -> dict:
    params = dict(response_type="code", client_id=CLIENT_ID, redirect_uri=REDIRECT_URI,
                  scope="openid profile email", state="state-123", nonce="nonce-abc",
                  code_challenge=challenge, code_challenge_method="S256")
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def sign_in(client, params: dict, login: str = "alice", password: str = "alice-demo"):
    return client.post("/devidp/authorize", query_string=params, data={"login": login, "password": password})


def redirect_params(response) -> dict:
    location = response.headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def basic_auth(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def exchange(client, code: str, verifier: str | None, headers: dict | None = None, **extra):
    data = dict(grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier)
    data.update(extra)
    data = {k: v for k, v in data.items() if v is not None}
    return client.post("/devidp/token", data=data, headers=basic_auth() if headers is None else headers)


def obtain_code(client, login: str = "alice", password: str = "alice-demo") -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    response = sign_in(client, authorize_params(challenge), login, password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return redirect_params(response)["code"], verifier


def obtain_tokens(client, login: str = "alice", password: str = "alice-demo") -> dict:
    code, verifier = obtain_code(client, login, password)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def decode_id_token(client, id_token: str):
    """Verify as a relying party does: against the published JWKS, with issuer and audience pinned."""
    keys = JsonWebKey.import_key_set(client.get("/devidp/jwks").get_json())
    claims = jwt.decode(id_token, keys, claims_options={
        "iss": {"essential": True, "value": ISSUER},
        "aud": {"essential": True, "value": CLIENT_ID},
    })
    claims.validate()
    return claims


def test_demo_users_are_the_published_accounts():
    by_login = {u.login: u for u in DEMO_USERS}
    assert list(by_login) == ["alice", "bob", "dr.chen", "dr.okafor", "dr.reyes", "cora", "adam", "nora"]
    assert by_login["alice"].password == "alice-demo"
    assert by_login["alice"].patient_id == ALICE_PATIENT_ID
    assert by_login["bob"].patient_id == "00000000-0000-4000-8000-000000000002"
    assert (by_login["alice"].mrn, by_login["bob"].mrn) == (ALICE_MRN, "RC-100002")
    assert by_login["dr.reyes"].roles == ("clinician",)
    assert by_login["nora"].roles == ()
    assert len({u.subject for u in DEMO_USERS}) == len(DEMO_USERS)


def test_discovery_document_describes_a_strict_provider(client):
    doc = client.get("/devidp/.well-known/openid-configuration").get_json()
    assert doc["issuer"] == ISSUER
    for name, path in [("authorization_endpoint", "authorize"), ("token_endpoint", "token"),
                       ("userinfo_endpoint", "userinfo"), ("jwks_uri", "jwks"), ("end_session_endpoint", "logout")]:
        assert doc[name] == f"{ISSUER}/{path}"
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert "openid" in doc["scopes_supported"]
    assert {"roles", "patient_id", "nonce"} <= set(doc["claims_supported"])
    OpenIDProviderMetadata(doc).validate()


def test_jwks_publishes_only_the_public_key_with_a_kid(client):
    (key,) = client.get("/devidp/jwks").get_json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and key["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_signing_key_is_persisted_privately_and_reused(tmp_path):
    first = make_app(tmp_path / "inst").test_client().get("/devidp/jwks").get_json()
    key_file = tmp_path / "inst" / KEY_FILENAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = make_app(tmp_path / "inst").test_client().get("/devidp/jwks").get_json()
    assert first == second


def test_sign_in_form_lists_demo_users_and_carries_csrf_field(client):
    _, challenge = pkce_pair()
    response = client.get("/devidp/authorize", query_string=authorize_params(challenge))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert 'name="csrf_token"' in page and "<main>" in page
    assert 'for="login"' in page and 'for="password"' in page
    for user in DEMO_USERS:
        assert user.login in page and user.password in page
    assert "<script" not in page and "style=" not in page and "<style" not in page


def test_full_code_flow_with_pkce_yields_verified_id_token(client):
    verifier, challenge = pkce_pair()
    response = sign_in(client, authorize_params(challenge))
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    params = redirect_params(response)
    assert params["state"] == "state-123"

    token_response = exchange(client, params["code"], verifier)
    assert token_response.status_code == 200
    assert token_response.headers["Cache-Control"] == "no-store"
    tokens = token_response.get_json()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["expires_in"] == 3600
    assert "refresh_token" not in tokens

    claims = decode_id_token(client, tokens["id_token"])
    assert claims["sub"] == "demo-alice"
    assert claims["nonce"] == "nonce-abc"
    assert claims["roles"] == ["patient"]
    assert claims["patient_id"] == ALICE_MRN
    assert claims["name"] == "Alice Moreau" and claims["email"]
    assert claims["iat"] <= claims["auth_time"] + 5 and claims["exp"] > claims["iat"]
    header = claims.header
    assert header["alg"] == "RS256"
    assert header["kid"] == client.get("/devidp/jwks").get_json()["keys"][0]["kid"]


def test_client_secret_post_is_accepted(client):
    code, verifier = obtain_code(client)
    response = exchange(client, code, verifier, headers={}, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert response.status_code == 200 and "id_token" in response.get_json()


@pytest.mark.parametrize("login,password,roles", [
    ("dr.chen", "chen-demo", ["clinician"]),
    ("nora", "nora-demo", []),
])
def test_non_patients_have_no_patient_id(client, login, password, roles):
    claims = decode_id_token(client, obtain_tokens(client, login, password)["id_token"])
    assert claims["roles"] == roles
    assert "patient_id" not in claims


def test_wrong_password_rerenders_form_with_401_and_no_code(client):
    _, challenge = pkce_pair()
    response = sign_in(client, authorize_params(challenge), "alice", "bob-demo")
    assert response.status_code == 401
    assert "Location" not in response.headers
    page = response.get_data(as_text=True)
    assert "Wrong login or password" in page and 'value="alice"' in page


@pytest.mark.parametrize("pkce", [
    {"code_challenge": None, "code_challenge_method": None},
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},
])
def test_authorization_without_s256_pkce_is_refused(client, pkce):
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge, **pkce)
    for response in (client.get("/devidp/authorize", query_string=params), sign_in(client, params)):
        assert response.status_code == 302
        result = redirect_params(response)
        assert result["error"] == "invalid_request" and "code" not in result
        assert result["state"] == "state-123"


@pytest.mark.parametrize("verifier", [None, "wrong-" + "v" * 50])
def test_token_exchange_needs_the_matching_verifier(client, verifier):
    code, _ = obtain_code(client)
    response = exchange(client, code, verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] in {"invalid_request", "invalid_grant"}
    assert "access_token" not in response.get_json()


def test_code_is_single_use_and_replay_revokes_its_tokens(client):
    code, verifier = obtain_code(client)
    tokens = exchange(client, code, verifier).get_json()
    replay = exchange(client, code, verifier)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    userinfo = client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401


def test_expired_code_is_refused(client, monkeypatch):
    monkeypatch.setattr(devidp_store, "CODE_LIFETIME_SECONDS", -1)
    code, verifier = obtain_code(client)
    response = exchange(client, code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_refused(client):
    code, verifier = obtain_code(client)
    response = exchange(client, code, verifier, headers=basic_auth(secret="not-the-secret"))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("overrides", [
    {"redirect_uri": "https://evil.example/callback"},
    {"redirect_uri": f"{BASE}/auth/callback/extra"},
    {"client_id": "someone-else"},
    {"client_id": None},
])
def test_bad_client_or_redirect_uri_shows_error_page_without_redirect(client, overrides):
    _, challenge = pkce_pair()
    params = authorize_params(challenge, **overrides)
    for response in (client.get("/devidp/authorize", query_string=params), sign_in(client, params)):
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert "Sign-in request refused" in response.get_data(as_text=True)


def test_unsupported_response_type_is_not_redirected_to_unregistered_uri(client):
    _, challenge = pkce_pair()
    params = authorize_params(challenge, response_type="token", redirect_uri="https://evil.example/cb")
    response = client.get("/devidp/authorize", query_string=params)
    assert response.status_code == 400 and "Location" not in response.headers


def test_prompt_none_gets_login_required_because_sign_in_is_never_remembered(client):
    _, challenge = pkce_pair()
    response = client.get("/devidp/authorize", query_string=authorize_params(challenge, prompt="none"))
    assert response.status_code == 302 and redirect_params(response)["error"] == "login_required"


def test_userinfo_returns_claims_for_a_bearer_token(client):
    tokens = obtain_tokens(client)
    response = client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200
    info = response.get_json()
    assert info["sub"] == "demo-alice" and info["name"] == "Alice Moreau" and info["email"]
    assert info["roles"] == ["patient"] and info["patient_id"] == ALICE_MRN


def test_userinfo_without_a_valid_token_is_401(client):
    assert client.get("/devidp/userinfo").status_code == 401
    assert client.get("/devidp/userinfo", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_logout_redirects_only_to_the_registered_uri(client):
    tokens = obtain_tokens(client)
    ok = client.get("/devidp/logout", query_string={"id_token_hint": tokens["id_token"],
                                                     "post_logout_redirect_uri": f"{BASE}/", "state": "s1"})
    assert ok.status_code == 302 and ok.headers["Location"] == f"{BASE}/?state=s1"
    userinfo = client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401

    evil = client.get("/devidp/logout", query_string={"id_token_hint": tokens["id_token"],
                                                       "post_logout_redirect_uri": "https://evil.example/"})
    assert evil.status_code == 200 and "Location" not in evil.headers
    assert "Signed out" in evil.get_data(as_text=True)


def test_logout_without_or_with_bad_hint_shows_signed_out_page(client):
    plain = client.get("/devidp/logout", query_string={"post_logout_redirect_uri": f"{BASE}/"})
    assert plain.status_code == 200 and "Location" not in plain.headers
    bad = client.get("/devidp/logout", query_string={"id_token_hint": "not.a.jwt",
                                                      "post_logout_redirect_uri": f"{BASE}/"})
    assert bad.status_code == 400 and "Location" not in bad.headers
    assert "Signed out" in bad.get_data(as_text=True)


def test_sign_in_posts_are_rate_limited(client):
    _, challenge = pkce_pair()
    params = authorize_params(challenge)
    statuses = [sign_in(client, params, "alice", "wrong").status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429


def test_csrf_guards_the_form_but_not_the_token_endpoint(tmp_path):
    client = make_app(tmp_path / "instance", csrf_enabled=True).test_client()
    _, challenge = pkce_pair()
    refused = sign_in(client, authorize_params(challenge))
    assert refused.status_code == 400 and "Location" not in refused.headers
    token = client.post("/devidp/token", data={"grant_type": "authorization_code", "code": "x",
                                               "redirect_uri": REDIRECT_URI}, headers=basic_auth())
    assert token.status_code == 400 and token.get_json()["error"] == "invalid_grant"


def test_redirect_uri_falls_back_to_issuer_when_no_external_url(tmp_path):
    client = make_app(tmp_path / "instance", external_url="").test_client()
    code, verifier = obtain_code(client)
    assert exchange(client, code, verifier).status_code == 200


def test_disabled_provider_mounts_nothing(tmp_path):
    app = Flask(__name__, instance_path=str(tmp_path))
    assert devidp.init_app(app, make_settings(dev_idp=False)) is None
    assert app.test_client().get("/devidp/jwks").status_code == 404
