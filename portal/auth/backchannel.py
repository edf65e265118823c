"""OpenID Connect Back-Channel Logout 1.0: the provider ends a user's portal sessions server to server.

The logout token is verified with joserfc against the provider's published keys (asymmetric
algorithms only), then its claims as the specification requires: ``iss``, ``aud``, ``iat`` (and
``exp`` when present), ``jti``, the back-channel ``events`` member, ``sid`` or ``sub``, and no
``nonce``. A ``jti`` is accepted once: its digest is stored until the token would be too old anyway,
in the database, so a replay to any worker is refused.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import requests
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from portal import services
from portal.auth.provider import provider_client
from portal.auth.sessions import end_sessions
from portal.db import db_session
from portal.exceptions import LogoutTokenError, SignInError
from portal.models import LoginSession, SeenLogoutToken, User

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_TOKEN_AGE = timedelta(minutes=5)  # older logout tokens are refused, so seen jtis need keeping only this long
LEEWAY_SECONDS = 30
JWKS_REFETCH_EVERY = 60.0  # seconds
_last_refetch = -JWKS_REFETCH_EVERY


def verified_claims(token: str) -> dict[str, Any]:
    """The logout token's claims once its signature and every claim the specification requires check out."""
    try:
        client = provider_client()
        metadata = client.load_server_metadata()
        decoded = _decode(token, client.fetch_jwk_set, metadata["id_token_signing_alg_values_supported"])
    except (requests.RequestException, SignInError) as exc:
        raise LogoutTokenError("provider_unreachable", "The provider's keys could not be fetched.") from exc
    except JoseError as exc:
        raise LogoutTokenError(f"logout_token_{exc.error}", "The logout token failed verification.") from exc
    if decoded.header.get("typ", "logout+jwt").lower() not in {"logout+jwt", "application/logout+jwt", "jwt"}:
        raise LogoutTokenError("logout_token_typ", "The token is not a logout token.")
    claims = dict(decoded.claims)
    _check_claims(claims, metadata["issuer"], client.client_id)
    return claims


def _decode(token: str, fetch_jwk_set: Callable[..., dict], algorithms: list[str]) -> jwt.Token:
    """Verify the signature; an unknown key id refetches the provider's keys (key rotation), at most
    once a minute per worker, so forged tokens cannot make the portal hammer the provider."""
    global _last_refetch
    try:
        return jwt.decode(token, KeySet.import_key_set(fetch_jwk_set()), algorithms=algorithms)
    except InvalidKeyIdError:
        if time.monotonic() - _last_refetch < JWKS_REFETCH_EVERY:
            raise
        _last_refetch = time.monotonic()
        return jwt.decode(token, KeySet.import_key_set(fetch_jwk_set(force=True)), algorithms=algorithms)


def _check_claims(claims: dict[str, Any], issuer: str, client_id: str) -> None:
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        exp={"essential": True},  # required since the specification's errata set 1
        jti={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise LogoutTokenError(f"logout_token_{exc.error}", "The logout token failed verification.") from exc
    now = datetime.now(timezone.utc).timestamp()
    if not isinstance(claims["iat"], (int, float)) or claims["iat"] < now - MAX_TOKEN_AGE.total_seconds():
        raise LogoutTokenError("logout_token_too_old", "The logout token was issued too long ago.")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise LogoutTokenError("logout_token_no_event", "The token does not carry the back-channel logout event.")
    if "nonce" in claims:
        raise LogoutTokenError("logout_token_nonce", "A logout token must not carry a nonce.")
    if not isinstance(claims.get("sid"), str) and not isinstance(claims.get("sub"), str):
        raise LogoutTokenError("logout_token_no_subject", "The logout token names neither a session nor a user.")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise LogoutTokenError("logout_token_jti", "The logout token has no usable jti.")


def remember_jti(claims: dict[str, Any]) -> None:
    """Accept each (issuer, jti) once across every worker; a second use is a replay.

    Only flushed: it commits together with the sessions it ends, so a failure there lets the
    provider's retry through instead of refusing it as a replay.
    """
    now = datetime.now(timezone.utc)
    digest = hashlib.sha256(f"{claims['iss']}\n{claims['jti']}".encode()).hexdigest()
    db_session.execute(sa.delete(SeenLogoutToken).where(SeenLogoutToken.expires_at < now))
    db_session.add(SeenLogoutToken(digest=digest, expires_at=now + MAX_TOKEN_AGE + timedelta(seconds=LEEWAY_SECONDS)))
    try:
        db_session.flush()
    except sa.exc.IntegrityError:
        db_session.rollback()
        raise LogoutTokenError("logout_token_replayed", "This logout token was already used.") from None


def end_provider_sessions(claims: dict[str, Any]) -> tuple[User | None, int]:
    """End the sessions the token names: those of its provider session (``sid``), else all of its user's."""
    user = None
    if isinstance(claims.get("sub"), str):
        user = db_session.scalars(sa.select(User).where(User.issuer == services.settings().oidc_issuer,
                                                        User.subject == claims["sub"])).first()
        if user is None:
            db_session.commit()  # the jti is spent all the same
            return None, 0
    query = sa.select(LoginSession).where(LoginSession.ended_at.is_(None))
    if isinstance(claims.get("sid"), str):
        query = query.where(LoginSession.provider_sid == claims["sid"])
    if user is not None:
        query = query.where(LoginSession.user_id == user.id)
    logins = db_session.scalars(query).all()
    if user is None and logins:
        user = logins[0].user
    return user, len(end_sessions(logins, "provider_logout"))

