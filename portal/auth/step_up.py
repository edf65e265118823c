"""Step-up authentication: sensitive actions need a fresh (and, where configured, strong) sign-in.

A view calls ``require(action, next_url)``. Without a live step-up for that action it raises
``StepUpRequired``; the error handler sends the browser to ``/auth/step-up``, which goes back to
the provider with ``max_age`` (and ``acr_values``). The callback checks the new ID token's
``sub``, ``auth_time`` and ``acr`` and stores the result on the server-side session, for that one
action and a short window only. The action's own audit event carries ``audit_details()``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, NoReturn

import sqlalchemy as sa
from flask_wtf.csrf import generate_csrf, validate_csrf

from portal import services
from portal.auth.sessions import claim_time, current_login
from portal.db import db_session
from portal.exceptions import StepUpRefused, StepUpRequired
from portal.models import LoginSession, User


class Sensitive(StrEnum):
    """The actions that need a fresh sign-in: the name a step-up is stored and audited under, and how the
    pages say what the sign-in is for."""

    purpose: str

    def __new__(cls, value: str, purpose: str) -> Sensitive:
        member = str.__new__(cls, value)
        member._value_ = value
        member.purpose = purpose
        return member

    @classmethod
    def find(cls, value: str) -> Sensitive | None:
        return cls._value2member_map_.get(value)

    BREAK_GLASS = "break_glass", "open a chart with emergency (break-glass) access"
    AUDIT_EXPORT = "audit_export", "export the audit log"
    KEY_ROTATION = "key_rotation", "re-encrypt stored data under the current primary key"

CLOCK_LEEWAY = timedelta(seconds=30)


@dataclass(frozen=True)
class StepUp:
    action: str
    auth_time: datetime
    acr: str | None

    def audit_details(self) -> dict[str, str | None]:
        return {"step_up": self.action, "step_up_auth_time": self.auth_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "step_up_acr": self.acr}


def link_token() -> str:
    """What makes a link to start a step-up genuine: this browser session's CSRF token, so another site
    can neither start a step-up nor choose where the fresh sign-in leads (an export, say)."""
    return generate_csrf()


def link_is_genuine(token: str) -> bool:
    try:
        validate_csrf(token)
    except ValueError:  # Flask-WTF raises WTForms' ValidationError, a ValueError, naming what failed
        return False
    return True


def authorization_params() -> dict[str, Any]:
    """What the provider is asked for: a sign-in no older than max_age, with the required acr."""
    settings = services.settings()
    params: dict[str, Any] = {"max_age": settings.oidc_step_up_max_age}
    if settings.oidc_step_up_acr:
        params["acr_values"] = settings.oidc_step_up_acr
    return params


def check_claims(user: User, issuer: str, claims: Mapping[str, Any], *, max_age: int, accepted_acr: list[str],
                 now: datetime | None = None) -> StepUp:
    """Refuse unless the verified ID token is the same person, signed in recently enough, strongly enough."""
    now = now or datetime.now(timezone.utc)
    if str(claims.get("sub")) != user.subject or issuer != user.issuer:
        raise StepUpRefused("step_up_other_user", "You signed in as someone else. Sign in again as yourself.")
    auth_time = claim_time(claims.get("auth_time"))
    if auth_time is None:
        raise StepUpRefused("step_up_no_auth_time", "The sign-in provider did not say when you signed in.")
    if auth_time > now + CLOCK_LEEWAY or now - auth_time > timedelta(seconds=max_age) + CLOCK_LEEWAY:
        raise StepUpRefused("step_up_stale", "Your sign-in was not recent enough for this action.")
    acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
    if accepted_acr and acr not in accepted_acr:
        raise StepUpRefused("step_up_weak", "Your sign-in was not strong enough for this action.")
    return StepUp("", auth_time, acr)  # the action is filled in by grant()


def grant(login: LoginSession, action: str, proof: StepUp) -> StepUp:
    """Remember the proven step-up for this action only, for the configured window."""
    login.step_up_action = action
    login.step_up_auth_time = proof.auth_time
    login.step_up_acr = proof.acr
    login.step_up_expires_at = datetime.now(timezone.utc) + timedelta(seconds=services.settings().step_up_window_seconds)
    db_session.commit()
    return replace(proof, action=action)


def current(action: Sensitive, resource: str | None = None) -> StepUp | None:
    """The live step-up for ``action`` in this session, if any; with ``resource`` (a patient for
    break-glass), only one asked for that same resource."""
    login = current_login()
    if login is None or login.step_up_action != action or login.step_up_expires_at is None:
        return None
    if login.step_up_expires_at <= datetime.now(timezone.utc):
        return None
    if resource is not None and _pending_values(login, action).get("resource") != resource:
        return None
    return StepUp(action, login.step_up_auth_time, login.step_up_acr)


def details(proof: StepUp | None) -> dict[str, str | None]:
    """What the action's audit event says about the step-up: the proof, or that one is required first."""
    return proof.audit_details() if proof is not None else {"step_up": "required"}


def ask(action: Sensitive, next_url: str, pending: Mapping[str, str] | None = None, resource: str | None = None) -> NoReturn:
    """Send the user to sign in again, keeping ``pending`` form values (and the resource the step-up
    will be good for) server-side until they return."""
    login = current_login()
    if login is not None and (pending is not None or resource is not None):
        login.step_up_pending = json.dumps({**(pending or {}), "action": action, "resource": resource})
        db_session.commit()
    raise StepUpRequired(action, next_url, f"Sign in again to {action.purpose}.", link_token())


def require(action: Sensitive, next_url: str) -> StepUp:
    """The live step-up for ``action``, or StepUpRequired."""
    return current(action) or ask(action, next_url)


def pending(action: Sensitive, resource: str | None = None) -> dict[str, str]:
    """Form values the user submitted before being asked to sign in again, for this action and resource."""
    login = current_login()
    values = _pending_values(login, action) if login is not None else {}
    return values if values.get("resource") == resource else {}


def _pending_values(login: LoginSession, action: str) -> dict[str, str]:
    values = json.loads(login.step_up_pending) if login.step_up_pending else {}
    return values if values.get("action") == action else {}


def consume(action: Sensitive) -> bool:
    """Spend a single-use step-up (break-glass, key rotation); False when it was already spent or expired.

    One conditional UPDATE, so two requests racing on one step-up cannot both use it.
    """
    login = current_login()
    if login is None:
        return False
    spent = db_session.execute(
        sa.update(LoginSession)
        .where(LoginSession.id == login.id, LoginSession.step_up_action == action,
               LoginSession.step_up_expires_at > datetime.now(timezone.utc))
        .values(step_up_action=None, step_up_expires_at=None, step_up_pending=None)
    ).rowcount
    db_session.commit()
    return spent == 1
