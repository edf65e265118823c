"""What the portal's two OAuth authorization servers share (the development OpenID provider, devidp/, and the
SMART server, fhir/): PKCE with S256 required of every client, and ID tokens signed RS256 with one key."""
from __future__ import annotations

import time
from collections.abc import Callable

from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey

ID_TOKEN_SECONDS = 3600


class RequiredS256(CodeChallenge):
    """PKCE on every authorization request, S256 only, and a verifier on every code exchange.

    Authlib's ``required=True`` only insists for public clients; SMART asks it of every client, and production
    OpenID providers increasingly do, so the development one does too.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is accepted.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier': PKCE is required of every client.")
        super().validate_code_verifier(grant, result)


class RS256OpenIDCode(OpenIDCode):
    """An ID token signed RS256 with the key ``signing_key()`` returns, named in its header, for an hour, from the
    issuer ``issuer()`` returns (asked at issue time: the SMART server's follows the request's address); a
    subclass answers Authlib's nonce and user-info questions."""

    def __init__(self, signing_key: Callable[[], RSAKey], issuer: Callable[[], str]) -> None:
        super().__init__(require_nonce=False)
        self._signing_key, self._issuer = signing_key, issuer

    def resolve_client_private_key(self, client: ClientMixin) -> RSAKey:
        return self._signing_key()

    def get_client_algorithm(self, client: ClientMixin) -> str:
        return "RS256"

    def get_encode_header(self, client: ClientMixin) -> dict:
        return {"alg": "RS256", "kid": self._signing_key().kid}

    def get_client_claims(self, client: ClientMixin) -> dict:
        issued = int(time.time())
        return {"iss": self._issuer(), "aud": client.get_client_id(), "iat": issued, "exp": issued + ID_TOKEN_SECONDS}
