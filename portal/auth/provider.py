"""The relying-party client for the configured OpenID provider (any standard one, or the dev provider)."""
from __future__ import annotations

from flask import session, url_for

from portal import services
from portal.exceptions import SignInError
from portal.extensions import oauth

# Asymmetric signatures only: "none" and HMAC-with-client-secret are never accepted for ID tokens.
ACCEPTED_ID_TOKEN_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def started_in_this_browser(state: str | None) -> bool:
    """Whether ``state`` is that of a sign-in (or step-up) this browser started and has not finished."""
    client = oauth.create_client("provider")
    return bool(state) and client.framework.get_state_data(session, state) is not None


def provider_client():
    """The Authlib client, with discovery checked: the issuer must be the configured one."""
    client = oauth.create_client("provider")
    metadata = client.load_server_metadata()
    issuer = services.settings().oidc_issuer
    if metadata.get("issuer", "").rstrip("/") != issuer:
        client.server_metadata = {}
        raise SignInError("issuer_mismatch", "The provider's discovery document names another issuer.")
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    metadata["id_token_signing_alg_values_supported"] = [alg for alg in offered if alg in ACCEPTED_ID_TOKEN_ALGS]
    return client


def redirect_uri(endpoint: str = "auth.callback") -> str:
    """Absolute URL registered at the provider: built from PORTAL_EXTERNAL_URL when it is set."""
    base = services.settings().external_url
    if base:
        return base + url_for(endpoint)
    return url_for(endpoint, _external=True)
