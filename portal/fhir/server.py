"""Authlib's authorization server, resource protector and token endpoints, configured the SMART way.

Everything protocol-related is Authlib's; this module supplies storage (``portal.fhir.service``), the
signing key, the scopes and what SMART adds or demands beyond plain OAuth 2.0:

* PKCE with S256 on every authorization request and a verifier on every code exchange, whatever the
  client (Authlib's helper accepts ``plain`` and insists on a verifier only from public clients);
* ``aud`` equal to the FHIR base URL, and exactly one of the app's registered redirect URIs;
* SMART scopes (v1, v2, ``?category=`` restrictions) checked by ``portal.scopes`` rather than by
  Authlib's exact-match list, and within what the app was registered for;
* the token response's ``patient``, an ID token with ``fhirUser`` for ``openid fhirUser``, and
  refresh tokens (``offline_access``) rotated on each use, a rotated one presented again revoking
  the whole grant.

Long because it is the one place where Authlib is configured: its grants, endpoints, validators and the
storage mixins they call are read together when the authorization server is reviewed.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, InvalidGrantError, InvalidRequestError, InvalidScopeError, TokenMixin
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import UserInfo
from flask import g, request
from joserfc.jwk import RSAKey

from portal.access import record, role_label
from portal.actions import Action
from portal.db import db_session
from portal.fhir import service
from portal.models import SmartApp, SmartAuthorizationCode, SmartGrant, SmartToken, User
from portal.oauth_server import RequiredS256, RS256OpenIDCode
from portal.request_fields import FHIR_BASE_PATH
from portal.scopes import FHIR_USER, ScopeError, ScopeSet

TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_METHODS = ("client_secret_basic", "client_secret_post")
_DESCRIPTION_UNSAFE = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]')


def safe_description(text: str) -> str:
    """An error_description RFC 6749 allows (printable ASCII without " and \\): Authlib refuses anything else."""
    return _DESCRIPTION_UNSAFE.sub("?", text)[:300]


def record_for_grant(action: Action, grant: SmartGrant, reason: str, **details: str | int | bool) -> None:
    """An event about one grant, made by (or for) the person who gave it, naming the app."""
    record(action, "allowed", reason=reason, actor_id=grant.user_id, actor_role=role_label(grant.user),
           patient_id=grant.patient_id, resource_type="smart_grant", resource_id=grant.id,
           details={"client_id": grant.app.client_id, "app": grant.app.name, "grant": grant.id, **details})


@dataclass(frozen=True)
class Settings:
    """What the server needs to know of the portal: its address (the FHIR base under it is the ``aud``
    and the ID token's issuer), the ID-token key and the token lifetimes."""

    external_url: str  # empty: the address the request came to
    signing_key: RSAKey
    access_token_seconds: int
    refresh_token_days: int

    @property
    def portal_base(self) -> str:
        return self.external_url or request.url_root.rstrip("/")

    @property
    def fhir_base(self) -> str:
        return self.portal_base + FHIR_BASE_PATH


@dataclass(frozen=True)
class Approval:
    """A person's consent, as the grants see it: who, for which chart, which scopes (after unticking)."""

    user: User
    patient_id: str
    scopes: str
    grant: SmartGrant | None = None  # once a code or a refresh token was exchanged


class AppClient(ClientMixin):
    """A registered app as Authlib's client: exact redirect URIs, its auth method, its registered scopes."""

    def __init__(self, app: SmartApp):
        self.app = app
        self.client_id = app.client_id

    def get_client_id(self) -> str:
        return self.app.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # SMART apps always send redirect_uri; one is never assumed

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes when the app was registered for all of them; otherwise invalid_scope, naming them."""
        requested = ScopeSet.parse(scope)  # already checked by validate_requested_scope
        if not requested.names:
            raise InvalidScopeError("Ask for at least one scope, e.g. launch/patient patient/*.rs.")
        outside = requested.within(ScopeSet.parse(self.app.allowed_scopes))
        if outside:
            raise InvalidScopeError(safe_description("The app is not registered for: " + " ".join(outside)))
        return requested.text

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.app.redirect_uri_list

    def check_client_secret(self, client_secret: str) -> bool:
        return service.secret_matches(self.app, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" if self.app.public else method in CONFIDENTIAL_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


class CodeRecord:
    """A stored authorization code as Authlib's grant reads it."""

    def __init__(self, row: SmartAuthorizationCode):
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scopes

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None

    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method


class IssuedToken(TokenMixin):
    """A stored token as presented: its access half (bearer, introspection) or its refresh half."""

    def __init__(self, row: SmartToken, refresh: bool):
        self.row, self.refresh = row, refresh

    @property
    def expires_at(self) -> datetime:
        return self.row.refresh_expires_at if self.refresh else self.row.expires_at

    def check_client(self, client: AppClient) -> bool:
        return self.row.grant.app_id == client.app.id

    def get_scope(self) -> str:
        return self.row.scopes

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at.timestamp() - time.time()))

    def is_expired(self) -> bool:
        return self.expires_at is None or self.expires_at.timestamp() <= time.time()

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.grant.revoked_at is not None

    @property
    def scopes(self) -> ScopeSet:
        return ScopeSet.parse(self.row.scopes)


class SmartAuthorizationServer(AuthorizationServer):
    """The portal's authorization server for apps."""

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings
        self.register_token_generator("default", self._generate_token)

    def query_client(self, client_id: str) -> AppClient | None:
        app = service.app_by_client_id(client_id)
        return AppClient(app) if app else None

    def validate_requested_scope(self, scope: str | None) -> None:
        try:
            ScopeSet.parse(scope)
        except ScopeError as exc:
            raise InvalidScopeError(safe_description(str(exc))) from None

    def _generate_token(self, grant_type: str, client: AppClient, user: Approval | None = None, scope: str | None = None,
                        expires_in: int | None = None, include_refresh_token: bool = True) -> dict:
        scopes = ScopeSet.parse(scope)
        token = {"token_type": "Bearer", "access_token": generate_token(48), "scope": scopes.text,
                 "expires_in": self.settings.access_token_seconds}
        if user is not None:
            token["patient"] = user.patient_id
        if scopes.offline and include_refresh_token:
            token["refresh_token"] = generate_token(48)
        return token

    def save_token(self, token: dict, request) -> None:
        approval: Approval = request.user
        grant = approval.grant
        service.save_token(grant, token["access_token"], token.get("refresh_token"), token["scope"],
                           int(token["expires_in"]), self.settings.refresh_token_days)
        g.smart_issued = approval  # the token endpoint's audit event names the person and the grant

    def public_jwks(self) -> dict:
        return {"keys": [self.settings.signing_key.as_dict(private=False)]}


class SmartCodeGrant(AuthorizationCodeGrant):
    """The authorization code grant: codes stored hashed, single use, a minute long; the first exchange
    starts the grant."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def save_authorization_code(self, code: str, request) -> None:
        approval: Approval = request.user
        data = request.payload.data
        service.save_code(code, request.client.app, approval.user, approval.patient_id,
                          redirect_uri=request.payload.redirect_uri, scopes=approval.scopes, nonce=data.get("nonce"),
                          challenge=data["code_challenge"], challenge_method=data["code_challenge_method"])

    def query_authorization_code(self, code: str, client: AppClient) -> CodeRecord | None:
        found = service.take_code(code, client.app)
        if found.revoked_grant is not None:
            record_for_grant(Action.SMART_GRANT_REVOKED, found.revoked_grant, service.CODE_REUSED)
        if found.code is None:
            g.smart_refusal = found.refusal
            return None
        return CodeRecord(found.code)

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        """The code was marked used, atomically, when it was taken: what is left is to commit the grant and
        its first tokens together."""
        db_session.commit()

    def authenticate_user(self, authorization_code: CodeRecord) -> Approval | None:
        row = authorization_code.row
        user = db_session.get(User, row.user_id)
        if user is None or not user.has_role("patient") or user.patient_id != row.patient_id:
            return None
        return Approval(user, row.patient_id, row.scopes, service.start_grant(row))


class SmartRefreshGrant(RefreshTokenGrant):
    """Refresh tokens rotate: each is exchanged once for a new pair. A rotated one presented again means
    a copy is in someone else's hands, so the whole grant and every token of it are revoked."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> IssuedToken | None:
        row = service.token_by_refresh(refresh_token)
        if row is None:
            return None
        token = IssuedToken(row, refresh=True)
        if row.revoked_reason == service.ROTATED and row.grant.revoked_at is None:
            self._revoke_for_reuse(row)
            return None
        if token.is_revoked() or token.is_expired():
            g.smart_refusal = "refresh_token_revoked" if token.is_revoked() else "refresh_token_expired"
            return None
        return token

    def _revoke_for_reuse(self, row: SmartToken) -> None:
        grant = row.grant
        service.revoke_grant(grant, service.REFRESH_REUSED)
        g.smart_refusal = service.REFRESH_REUSED
        record_for_grant(Action.SMART_GRANT_REVOKED, grant, service.REFRESH_REUSED)

    def authenticate_user(self, refresh_token: IssuedToken) -> Approval | None:
        grant = refresh_token.row.grant
        user = service.grant_holder(grant)
        return Approval(user, grant.patient_id, grant.scopes, grant) if user else None

    def revoke_old_credential(self, refresh_token: IssuedToken) -> None:
        if not service.claim_rotation(refresh_token.row):  # another exchange of the same token won the race
            db_session.rollback()
            self._revoke_for_reuse(refresh_token.row)
            raise InvalidGrantError("The refresh token was already used.")
        db_session.commit()


class RequiredAudience:
    """SMART's ``aud``: the FHIR base URL the app means to call, so a token is never minted for another server."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def __call__(self, grant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant, redirect_uri: str) -> None:
        aud, fhir_base = grant.request.payload.data.get("aud"), self.settings.fhir_base
        if not aud:
            raise InvalidRequestError(f"Missing 'aud': send the FHIR base URL, {fhir_base}.")
        if aud.rstrip("/") != fhir_base:
            raise InvalidRequestError(f"'aud' must be this server's FHIR base URL, {fhir_base}.")


class SmartOpenIDCode(RS256OpenIDCode):
    """The ID token of ``openid``: RS256 with the key the JWKS publishes; ``fhirUser`` names the Patient."""

    def __init__(self, settings: Settings):
        super().__init__(lambda: settings.signing_key, lambda: settings.fhir_base)
        self.settings = settings

    def exists_nonce(self, nonce: str, request) -> bool:
        return service.nonce_used(request.payload.client_id, nonce)

    def generate_user_info(self, user: Approval, scope: str) -> UserInfo:
        claims = UserInfo(sub=user.user.id)
        if FHIR_USER in scope.split():
            claims["fhirUser"] = f"{self.settings.fhir_base}/Patient/{user.patient_id}"
        return claims


class SmartBearerValidator(BearerTokenValidator):
    """Access tokens by their hash; a grant revoked, or a person no longer the linked patient, ends them."""

    def authenticate_token(self, token_string: str) -> IssuedToken | None:
        row = service.token_by_access(token_string) if 0 < len(token_string) <= 200 else None
        return IssuedToken(row, refresh=False) if row else None

    def validate_token(self, token: IssuedToken | None, scopes, request) -> None:
        g.presented_token = token  # a refusal of a known token names its app and person in the audit log
        super().validate_token(token, None, request)  # present, unexpired, not revoked; scopes are the policy's


class SmartRevocationEndpoint(RevocationEndpoint):
    """RFC 7009: an app revokes its own token; a refresh token ends the whole grant."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return _query_token(token_string, token_type_hint)

    def revoke_token(self, token: IssuedToken, request) -> None:
        if token.refresh:
            service.revoke_grant(token.row.grant, service.REVOKED_BY_APP)
        else:
            service.revoke_token(token.row, service.REVOKED_BY_APP)
        g.smart_revoked = token


class SmartIntrospectionEndpoint(IntrospectionEndpoint):
    """RFC 7662: an app learns whether its own token is active, for which patient, scopes and expiry."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return _query_token(token_string, token_type_hint)

    def check_permission(self, token: IssuedToken, client: AppClient, request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: IssuedToken) -> dict:
        grant = token.row.grant
        g.smart_introspected = token
        return {"active": True, "scope": token.row.scopes, "client_id": grant.app.client_id, "patient": grant.patient_id,
                "sub": grant.user_id, "token_type": "refresh_token" if token.refresh else "Bearer",
                "exp": int(token.expires_at.timestamp()), "iat": int(token.row.issued_at.timestamp()),
                "iss": self.server.settings.fhir_base, "aud": self.server.settings.fhir_base}


def _query_token(token_string: str, hint: str | None) -> IssuedToken | None:
    if not 0 < len(token_string) <= 200:
        return None
    # The hint only orders the lookups: a token not found as the hinted type is looked for as the other
    # (RFC 7009 section 2.1, RFC 7662 section 2.1), so a wrong hint never leaves a live token "revoked".
    lookups = [(service.token_by_access, False), (service.token_by_refresh, True)]
    if hint == "refresh_token":
        lookups.reverse()
    for lookup, refresh in lookups:
        row = lookup(token_string)
        if row is not None:
            return IssuedToken(row, refresh=refresh)
    return None


def build_server(settings: Settings) -> tuple[SmartAuthorizationServer, ResourceProtector]:
    server = SmartAuthorizationServer(settings)
    server.register_grant(SmartCodeGrant, [RequiredS256(required=True), RequiredAudience(settings),
                                           SmartOpenIDCode(settings)])
    server.register_grant(SmartRefreshGrant)
    server.register_endpoint(SmartRevocationEndpoint)
    server.register_endpoint(SmartIntrospectionEndpoint)
    protector = ResourceProtector()
    protector.register_token_validator(SmartBearerValidator(realm="fhir"))
    return server, protector
