"""The rules for apps, grants, codes and tokens. The authorization server and the views call these.

Every code, token and client secret is stored as its SHA-256 hash (they are long random values, so
a fast hash is enough: nothing to guess), and compared in constant time where a secret is checked.
A grant is one patient's consent for one app; connecting the same app again replaces it. Revoking a
grant revokes every token issued under it at once.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import sqlalchemy as sa

from portal.config import LOOPBACK_HOSTS
from portal.db import db_session
from portal.exceptions import InvalidInput, NotFound
from portal.models import Patient, SmartApp, SmartAuthorizationCode, SmartGrant, SmartToken, User
from portal.scopes import ScopeError, ScopeSet
from portal.validation import is_storable_text

CODE_SECONDS = 60
APP_NAME_MAX = 120
REDIRECT_URIS_MAX = 10
REDIRECT_URI_MAX = 500
# Why a token or grant ended, as stored (and shown to the patient on the Connected apps page).
REVOKED_BY_PATIENT = "revoked_by_patient"
REVOKED_BY_APP = "revoked_by_app"
REPLACED = "replaced"
ROTATED = "rotated"
REFRESH_REUSED = "refresh_token_reused"
CODE_REUSED = "code_reused"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- the app registry


@dataclass(frozen=True)
class Registration:
    app: SmartApp
    client_secret: str | None  # shown once, to the administrator who registered a confidential app


def register_app(name: str, redirect_uris: Iterable[str], public: bool, scopes: str,
                 created_by: str | None = None) -> Registration:
    """Register an app; a confidential one gets a secret, returned here and never again."""
    name = (name or "").strip()
    if not name or len(name) > APP_NAME_MAX or not is_storable_text(name) or not name.isprintable():
        raise InvalidInput("bad_app_name", f"An app needs a name of 1 to {APP_NAME_MAX} characters.")
    uris = _checked_redirect_uris(redirect_uris)
    try:
        allowed = ScopeSet.parse(scopes)
    except ScopeError as exc:
        raise InvalidInput("bad_scope", str(exc)) from None
    if not allowed.names:
        raise InvalidInput("bad_scope", "Give the scopes the app may ask for, e.g. launch/patient patient/*.rs.")
    secret = None if public else secrets.token_urlsafe(32)
    app = SmartApp(client_id=secrets.token_urlsafe(18), name=name, public=public,
                   secret_hash=digest(secret) if secret else None, redirect_uris="\n".join(uris),
                   allowed_scopes=allowed.text, created_by=created_by)
    db_session.add(app)
    db_session.commit()
    return Registration(app, secret)


def _checked_redirect_uris(values: Iterable[str]) -> list[str]:
    uris = list(dict.fromkeys(value.strip() for value in values if value and value.strip()))
    if not uris or len(uris) > REDIRECT_URIS_MAX:
        raise InvalidInput("bad_redirect_uri", f"Give 1 to {REDIRECT_URIS_MAX} redirect URIs, one per line.")
    for uri in uris:
        parts = urlsplit(uri)
        secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        if len(uri) > REDIRECT_URI_MAX or not secure or not parts.netloc or parts.fragment or not uri.isprintable():
            raise InvalidInput("bad_redirect_uri", "Redirect URIs are https:// addresses (http:// only on this "
                                                   "computer, 127.0.0.1 or localhost) without a #fragment.")
    return uris


def app_by_client_id(client_id: str | None) -> SmartApp | None:
    if not client_id or len(client_id) > 64:
        return None
    return db_session.scalars(sa.select(SmartApp).where(SmartApp.client_id == client_id)).first()


def registered_apps() -> list[SmartApp]:
    return list(db_session.scalars(sa.select(SmartApp).order_by(SmartApp.created_at.desc())))


def secret_matches(app: SmartApp, secret: str) -> bool:
    return app.secret_hash is not None and hmac.compare_digest(app.secret_hash, digest(secret))


# --------------------------------------------------------------------------- authorization codes


def save_code(code: str, app: SmartApp, user: User, patient_id: str, *, redirect_uri: str, scopes: str,
              nonce: str | None, challenge: str, challenge_method: str) -> None:
    issued = now()
    db_session.add(SmartAuthorizationCode(
        code_hash=digest(code), app_id=app.id, user_id=user.id, patient_id=patient_id, redirect_uri=redirect_uri,
        scopes=scopes, nonce=nonce, code_challenge=challenge, code_challenge_method=challenge_method,
        auth_time=issued, created_at=issued, expires_at=issued + timedelta(seconds=CODE_SECONDS)))
    db_session.commit()


@dataclass(frozen=True)
class CodeLookup:
    code: SmartAuthorizationCode | None
    refusal: str | None  # why a code that exists cannot be exchanged: "expired" or "reused"
    revoked_grant: SmartGrant | None = None


def take_code(code: str, app: SmartApp) -> CodeLookup:
    """The code, marked used, when it is this app's, unused and unexpired. A code presented a second time
    revokes the grant its first use started (RFC 6749 4.1.2: it may have been stolen)."""
    row = db_session.get(SmartAuthorizationCode, digest(code))
    if row is None or row.app_id != app.id:
        return CodeLookup(None, None)
    if row.used_at is not None:
        grant = db_session.get(SmartGrant, row.grant_id) if row.grant_id else None
        if grant is not None and grant.revoked_at is None:
            revoke_grant(grant, CODE_REUSED)
            return CodeLookup(None, "reused", grant)
        return CodeLookup(None, "reused")
    if row.expires_at <= now():
        return CodeLookup(None, "expired")
    claimed = db_session.execute(sa.update(SmartAuthorizationCode).where(
        SmartAuthorizationCode.code_hash == row.code_hash, SmartAuthorizationCode.used_at.is_(None)
    ).values(used_at=now())).rowcount
    db_session.commit()
    return CodeLookup(row if claimed == 1 else None, None if claimed == 1 else "reused")


def nonce_used(client_id: str, nonce: str) -> bool:
    query = (sa.select(sa.literal(1)).select_from(SmartAuthorizationCode).join(SmartApp)
             .where(SmartApp.client_id == client_id, SmartAuthorizationCode.nonce == nonce).limit(1))
    return db_session.execute(query).first() is not None


# --------------------------------------------------------------------------- grants


def start_grant(code: SmartAuthorizationCode) -> SmartGrant:
    """The grant a code's first exchange starts; it replaces the patient's earlier grant to the same app."""
    earlier = db_session.scalars(sa.select(SmartGrant).where(
        SmartGrant.app_id == code.app_id, SmartGrant.user_id == code.user_id, SmartGrant.revoked_at.is_(None)))
    for grant in earlier:
        revoke_grant(grant, REPLACED, commit=False)
    grant = SmartGrant(app_id=code.app_id, user_id=code.user_id, patient_id=code.patient_id, scopes=code.scopes,
                       read_count=0)
    db_session.add(grant)
    db_session.flush()
    code.grant_id = grant.id
    return grant


def revoke_grant(grant: SmartGrant, reason: str, *, commit: bool = True) -> int:
    """End a grant and every token issued under it, at once; returns how many live tokens it ended."""
    stamp = now()
    if grant.revoked_at is None:
        grant.revoked_at, grant.revoked_reason = stamp, reason
    ended = db_session.execute(sa.update(SmartToken).where(
        SmartToken.grant_id == grant.id, SmartToken.revoked_at.is_(None)).values(revoked_at=stamp, revoked_reason=reason)
    ).rowcount
    if commit:
        db_session.commit()
    return ended


def connected_apps(user_id: str) -> list[SmartGrant]:
    """The user's live grants, most recently connected first."""
    return list(db_session.scalars(sa.select(SmartGrant).where(
        SmartGrant.user_id == user_id, SmartGrant.revoked_at.is_(None)).order_by(SmartGrant.created_at.desc())))


def own_grant(user_id: str, grant_id: str) -> SmartGrant:
    grant = db_session.get(SmartGrant, grant_id)
    if grant is None or grant.user_id != user_id or grant.revoked_at is not None:
        raise NotFound("no_such_app", "That app is not connected to your account.")
    return grant


def note_use(grant_id: str) -> None:
    """One more read by the grant's app: counted, with the first and last time (one UPDATE, race-free)."""
    stamp = now()
    db_session.execute(sa.update(SmartGrant).where(SmartGrant.id == grant_id).values(
        read_count=SmartGrant.read_count + 1, last_used_at=stamp,
        first_used_at=sa.func.coalesce(SmartGrant.first_used_at, stamp)))
    db_session.commit()


def grant_holder(grant: SmartGrant) -> User | None:
    """The person a grant acts for, while they are still the linked patient it was granted for."""
    user = grant.user
    if user is None or not user.has_role("patient") or user.patient_id != grant.patient_id:
        return None
    return user if db_session.get(Patient, grant.patient_id) is not None else None


# --------------------------------------------------------------------------- tokens


def save_token(grant: SmartGrant, access_token: str, refresh_token: str | None, scopes: str, expires_in: int,
               refresh_days: int) -> SmartToken:
    issued = now()
    token = SmartToken(grant_id=grant.id, access_token_hash=digest(access_token),
                       refresh_token_hash=digest(refresh_token) if refresh_token else None, scopes=scopes,
                       issued_at=issued, expires_at=issued + timedelta(seconds=expires_in),
                       refresh_expires_at=issued + timedelta(days=refresh_days) if refresh_token else None)
    db_session.add(token)
    db_session.flush()
    return token


def token_by_access(value: str) -> SmartToken | None:
    return db_session.scalars(sa.select(SmartToken).where(SmartToken.access_token_hash == digest(value))).first()


def token_by_refresh(value: str) -> SmartToken | None:
    return db_session.scalars(sa.select(SmartToken).where(SmartToken.refresh_token_hash == digest(value))).first()


def claim_rotation(token: SmartToken) -> bool:
    """Retire a refresh token as it is exchanged for a new one; False when another request got there first."""
    return db_session.execute(sa.update(SmartToken).where(
        SmartToken.id == token.id, SmartToken.revoked_at.is_(None)).values(revoked_at=now(), revoked_reason=ROTATED)
    ).rowcount == 1


def revoke_token(token: SmartToken, reason: str) -> None:
    db_session.execute(sa.update(SmartToken).where(SmartToken.id == token.id, SmartToken.revoked_at.is_(None))
                       .values(revoked_at=now(), revoked_reason=reason))
    db_session.commit()
