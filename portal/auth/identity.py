"""Turns verified OpenID claims into the portal's local user row."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

import sqlalchemy as sa

from portal.config import Settings
from portal.db import db_session
from portal.exceptions import InvalidInput
from portal.models import LINKED_BY_CLAIM, Patient, User
from portal.people import patient_by_mrn
from portal.validation import parse_id


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
    _link_chart(user, claims.get(settings.oidc_patient_claim), settings.oidc_patient_match)
    user.last_sign_in_at = datetime.now(timezone.utc)
    return user


def chart_link(user: User) -> str:
    """How a patient account reached its chart, for the sign-in's audit event: claim, admin or none."""
    return user.patient_link_source or LINKED_BY_CLAIM if user.patient_id else "none"


def _link_chart(user: User, claim: object, match: str) -> None:
    """The patient claim decides the link at every sign-in, unless an administrator decided it.

    An administrator's link or unlink stands whatever later sign-ins say; a link opens a chart only
    while the account has the patient role (the policy checks both), so an account that loses the role
    at the provider reaches nothing, and one that regains it finds the administrator's decision intact.
    A link the claim made goes with the role.
    """
    if user.linked_by_admin:
        return
    if not user.has_role("patient"):
        user.patient_id = user.patient_link_source = None
    else:
        user.patient_id, user.patient_link_source = _claimed_chart(claim, match), LINKED_BY_CLAIM


def _claimed_chart(claim: object, match: str) -> str | None:
    """The chart the claim names, by MRN or by portal id; a missing, malformed or unknown value links nothing."""
    if not isinstance(claim, str) or not claim:
        return None
    try:
        patient = db_session.get(Patient, parse_id(claim)) if match == "id" else patient_by_mrn(claim)
    except InvalidInput:  # not shaped like an id or an MRN: the provider's claim is simply not a link
        return None
    return patient.id if patient else None
