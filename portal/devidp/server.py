"""Authlib's authorization server, configured as a strict OpenID provider for one client.

Everything protocol-related is Authlib's: this module only supplies storage, the signing key and
the claims. The provider is deliberately stricter than the specifications require (PKCE with S256
on every request, one exact redirect URI) so the portal cannot come to depend on leniency that a
production provider would not offer.
"""
from __future__ import annotations

import time

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from joserfc.jwk import KeySet, RSAKey

from portal.devidp.store import (
    ACCESS_TOKEN_LIFETIME_SECONDS,
    TOKEN_AUTH_METHODS,
    AccessToken,
    AuthorizationCode,
    DevClient,
    MemoryStore,
)
from portal.devidp.users import DemoUser, user_by_subject
from portal.oauth_server import RequiredS256, RS256OpenIDCode


def user_claims(user: DemoUser) -> UserInfo:
    """The claims the portal maps to its own roles and patient record, shared by ID token and userinfo."""
    claims = UserInfo(
        sub=user.subject,
        name=user.name,
        preferred_username=user.login,
        email=user.email,
        email_verified=True,
        roles=list(user.roles),
    )
    if user.mrn:
        claims["patient_id"] = user.mrn  # the portal's default patient claim, matched against the chart's MRN
    return claims


class DevAuthorizationServer(AuthorizationServer):
    """An authorization server that knows exactly one client and keeps its state in memory."""

    def __init__(self, client: DevClient, store: MemoryStore, key: RSAKey, issuer: str):
        super().__init__()
        self.client = client
        self.store = store
        self.key = key
        self.issuer = issuer
        # Our own configuration, not the portal's app.config: the token lifetime is fixed here.
        self.load_config({"OAUTH2_TOKEN_EXPIRES_IN": {"authorization_code": ACCESS_TOKEN_LIFETIME_SECONDS}})

    def query_client(self, client_id: str) -> DevClient | None:
        return self.client if client_id == self.client.client_id else None

    def save_token(self, token: dict, request) -> None:
        self.store.save_token(AccessToken(
            access_token=token["access_token"],
            client=request.client,
            subject=request.user.subject,
            scope=token.get("scope", ""),
            code=request.authorization_code.code,
            issued_at=time.time(),
            expires_in=int(token["expires_in"]),
        ))

    def public_jwks(self) -> dict:
        """The JWKS document: only the public half of the signing key, with its kid."""
        return {"keys": [self.key.as_dict(private=False)]}


class DevAuthorizationCodeGrant(AuthorizationCodeGrant):
    """The code grant backed by the in-memory store; codes are taken out on first use."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_AUTH_METHODS)

    def save_authorization_code(self, code: str, request) -> None:
        data = request.payload.data
        self.server.store.save_code(AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "",
            subject=request.user.subject,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=int(time.time()),
        ))

    def query_authorization_code(self, code: str, client: DevClient) -> AuthorizationCode | None:
        return self.server.store.take_code(code, client.client_id)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: query_authorization_code already removed the code atomically."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> DemoUser | None:
        return user_by_subject(authorization_code.subject)


class DevOpenIDCode(RS256OpenIDCode):
    """Adds the RS256 ID token, with the portal's role and patient claims, to the code grant."""

    def __init__(self, server: DevAuthorizationServer):
        super().__init__(lambda: server.key, lambda: server.issuer)
        self.server = server

    def exists_nonce(self, nonce: str, request) -> bool:
        return self.server.store.nonce_in_use(request.payload.client_id, nonce)

    def generate_user_info(self, user: DemoUser, scope: str) -> UserInfo:
        return user_claims(user)


class DevBearerTokenValidator(BearerTokenValidator):
    """Looks bearer tokens up in the provider's store."""

    def __init__(self, store: MemoryStore):
        super().__init__()
        self.store = store

    def authenticate_token(self, token_string: str) -> AccessToken | None:
        return self.store.find_token(token_string)


class DevUserInfoEndpoint(UserInfoEndpoint):
    """The userinfo endpoint: the same claims as the ID token, as plain JSON."""

    def generate_user_info(self, user: DemoUser, scope: str) -> UserInfo:
        return user_claims(user)

    def get_issuer(self) -> str:
        return self.server.issuer

    def resolve_private_key(self) -> RSAKey:
        return self.server.key


class DevEndSessionEndpoint(EndSessionEndpoint):
    """RP-initiated logout: redirects only to a registered URI, and only with a valid id_token_hint."""

    def validate_request(self, request):
        validated = super().validate_request(request)
        claims = validated.id_token_claims
        if claims is not None and claims.get("iss") != self.server.issuer:
            raise InvalidRequestError("The 'id_token_hint' was not issued by this provider.")
        return validated

    def get_server_jwks(self) -> KeySet:
        return KeySet([self.server.key])

    def get_algorithms(self) -> list[str]:
        return ["RS256"]

    def end_session(self, end_session_request) -> None:
        """The provider keeps no sign-in session; ending one means revoking that person's tokens."""
        claims, client = end_session_request.id_token_claims, end_session_request.client
        if claims and client and claims.get("sub"):
            self.server.store.revoke_subject(client.client_id, claims["sub"])


def build_server(client: DevClient, key: RSAKey, issuer: str) -> DevAuthorizationServer:
    """Assemble the server with the code grant, PKCE, OpenID, userinfo and end-session support."""
    server = DevAuthorizationServer(client, MemoryStore(), key, issuer)
    server.register_grant(DevAuthorizationCodeGrant, [RequiredS256(required=True), DevOpenIDCode(server)])
    protector = ResourceProtector()
    protector.register_token_validator(DevBearerTokenValidator(server.store))
    server.register_endpoint(DevUserInfoEndpoint(server, resource_protector=protector))
    server.register_endpoint(DevEndSessionEndpoint(server))
    return server
