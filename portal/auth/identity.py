"""Turns verified OpenID claims into the portal's local user row."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

import sqlalchemy as sa

from portal.config import Settings
from portal.db import db_session
from portal.models import Patient, User


def portal_roles(claims: Mapping, settings: Settings) -> list[str]:
    """Map the provider's role claim to portal roles; unknown values are ignored."""
    raw = claims.get(settings.oidc_roles_claim) or []
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    mapping = settings.role_map
    return sorted({mapping[value] for value in raw if isinstance(value, str) and value in mapping})


def upsert_user(issuer: str, claims: Mapping, settings: Settings) -> User:
    """Create or update the user keyed by (issuer, subject) with what the provider says today."""
    user = db_session.scalars(
        sa.select(User).where(User.issuer == issuer, User.subject == str(claims["sub"]))
    ).first()
    if user is None:
        user = User(issuer=issuer, subject=str(claims["sub"]))
        db_session.add(user)
    user.display_name = claims.get("name") or claims.get("preferred_username") or claims.get("email")
    user.email = claims.get("email")
    roles = portal_roles(claims, settings)
    user.roles = ",".join(roles)
    user.patient_id = _linked_patient(claims.get(settings.oidc_patient_claim)) if "patient" in roles else None
    user.last_sign_in_at = datetime.now(timezone.utc)
    return user


def _linked_patient(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value if db_session.get(Patient, value) is not None else None
