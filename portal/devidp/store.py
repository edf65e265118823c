"""The provider's registered client and its in-memory codes and tokens.

The development provider runs inside a single development process, so a dictionary guarded by a
lock is all the storage it needs; a restart simply signs everyone out of the provider, which the
portal handles like any expired provider session.
"""
from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

from portal.devidp.users import DemoUser, user_by_subject

CODE_LIFETIME_SECONDS = 60
ACCESS_TOKEN_LIFETIME_SECONDS = 3600
SUPPORTED_SCOPES = ("openid", "profile", "email")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True)
class DevClient(ClientMixin):
    """The portal, the one relying party the development provider knows."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]

    @property
    def client_metadata(self) -> dict:
        """Authlib's userinfo and end-session endpoints read registration metadata from here."""
        return {
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "id_token_signed_response_alg": "RS256",
        }

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        requested = (scope or "").split()
        return " ".join(s for s in requested if s in SUPPORTED_SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in TOKEN_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    """A code waiting to be exchanged, with everything the token request is checked against."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    subject: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float = field(default_factory=lambda: time.time() + CODE_LIFETIME_SECONDS)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str]:
        return ["pwd"]


@dataclass
class AccessToken(TokenMixin):
    """An issued bearer token, usable at the userinfo endpoint."""

    access_token: str
    client: DevClient
    subject: str
    scope: str
    code: str
    issued_at: float
    expires_in: int
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> DemoUser | None:
        return user_by_subject(self.subject)

    def get_client(self) -> DevClient:
        return self.client


class MemoryStore:
    """Codes and tokens of one process; every method takes the lock, so request threads can share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._spent_codes: dict[str, float] = {}
        self._tokens: dict[str, AccessToken] = {}

    def save_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._purge()
            self._codes[code.code] = code

    def take_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """Remove and return a live code, so two concurrent exchanges cannot both succeed.

        Presenting a code a second time revokes the tokens issued for it (RFC 6749 section 4.1.2):
        a replayed code means it leaked.
        """
        with self._lock:
            self._purge()
            if code in self._spent_codes:
                self._revoke_where(lambda token: token.code == code)
                return None
            found = self._codes.pop(code, None)
            if found is None:
                return None
            self._spent_codes[code] = time.time()
            return found if found.client_id == client_id else None

    def nonce_in_use(self, client_id: str, nonce: str) -> bool:
        with self._lock:
            return any(c.client_id == client_id and c.nonce == nonce for c in self._codes.values())

    def save_token(self, token: AccessToken) -> None:
        with self._lock:
            self._purge()
            self._tokens[token.access_token] = token

    def find_token(self, access_token: str) -> AccessToken | None:
        with self._lock:
            return self._tokens.get(access_token)

    def revoke_subject(self, client_id: str, subject: str) -> None:
        """Sign-out ends the access tokens the provider issued to that person for that client."""
        with self._lock:
            self._revoke_where(lambda token: token.subject == subject and token.client.client_id == client_id)

    def _revoke_where(self, predicate: Callable[[AccessToken], bool]) -> None:
        for token in self._tokens.values():
            if predicate(token):
                token.revoked = True

    def _purge(self) -> None:
        """Drop expired entries so a long-running development server does not grow without bound."""
        now = time.time()
        self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}
        # Spent codes are remembered as long as the tokens issued for them, so a replay can revoke them.
        self._spent_codes = {
            k: v for k, v in self._spent_codes.items() if v + ACCESS_TOKEN_LIFETIME_SECONDS > now
        }
        self._tokens = {k: v for k, v in self._tokens.items() if not v.is_expired()}
