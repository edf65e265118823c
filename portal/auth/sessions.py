"""Server-side sign-in sessions: rotation at sign-in, idle time-out, absolute lifetime, sign-out.

The browser holds only a random token in the signed session cookie; the database holds its hash.
That makes sign-out and time-outs effective on every worker and for Socket.IO connections too.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import g, redirect, request, session, url_for
from flask_login import login_user, logout_user

from portal import services
from portal.db import db_session
from portal.models import LoginSession, User

TOUCH_EVERY = timedelta(seconds=30)  # at most one write per half minute per session


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User, id_token: str | None) -> LoginSession:
    """Sign the user in with a fresh session id (never reuse the pre-sign-in session)."""
    previous = current_login()
    if previous is not None and previous.ended_at is None:
        previous.ended_at, previous.end_reason = datetime.now(timezone.utc), "replaced"
    session.clear()
    token = secrets.token_urlsafe(32)
    login = LoginSession(token_hash=_hash(token), user=user, id_token=id_token)
    db_session.add(login)
    db_session.commit()
    session["sid"] = token
    session.permanent = True
    login_user(user)
    return login


def current_login() -> LoginSession | None:
    token = session.get("sid")
    if not token:
        return None
    return db_session.scalars(sa.select(LoginSession).where(LoginSession.token_hash == _hash(token))).first()


def end_session(login: LoginSession | None, reason: str) -> None:
    if login is not None and login.ended_at is None:
        login.ended_at = datetime.now(timezone.utc)
        login.end_reason = reason
        db_session.commit()
    logout_user()
    session.clear()


def expiry_reason(login: LoginSession, now: datetime) -> str | None:
    settings = services.settings()
    if login.ended_at is not None:
        return login.end_reason or "signed_out"
    if now - login.last_seen_at > timedelta(minutes=settings.session_idle_minutes):
        return "idle_timeout"
    if now - login.created_at > timedelta(hours=settings.session_max_hours):
        return "session_expired"
    return None


def load_user(user_id: str) -> User | None:
    """flask-login's user loader: a user counts as signed in only while their session is live."""
    login = current_login()
    if login is None or login.user_id != user_id:
        return None
    now = datetime.now(timezone.utc)
    reason = expiry_reason(login, now)
    if reason is not None:
        _expire(login, reason)
        return None
    idle_limit = timedelta(minutes=services.settings().session_idle_minutes)
    if not g.get("passive_activity") and now - login.last_seen_at > min(TOUCH_EVERY, idle_limit / 4):
        login.last_seen_at = now
        db_session.commit()
    return login.user


def _expire(login: LoginSession, reason: str) -> None:
    from portal.access import record

    already_ended = login.ended_at is not None
    if not already_ended:
        # We run inside flask-login's user loader: without a user in g, record() would read
        # current_user, which calls this loader again (endless recursion, then a 500).
        from portal.extensions import login_manager

        g._login_user = login_manager.anonymous_user()
        record("signout." + reason, "allowed", actor_id=login.user_id,
               actor_role=",".join(sorted(login.user.role_set)) or None, reason=reason)
        login.ended_at = datetime.now(timezone.utc)
        login.end_reason = reason
        db_session.commit()
    g.session_end_reason = reason
    session.clear()


def on_unauthorized():
    """Pages go to the sign-in page saying why; APIs get 401 with the standard error body."""
    from portal.errors import error_response, wants_json

    reason = g.get("session_end_reason")
    if wants_json():
        message = "Your session ended after inactivity." if reason == "idle_timeout" else "Sign in first."
        return error_response(401, reason or "unauthenticated", message)
    return redirect(url_for("auth.signin_page", reason=reason or None, next=_safe_next()))


def _safe_next() -> str | None:
    path = request.full_path if request.query_string else request.path
    return path if path.startswith("/") and not path.startswith("//") and request.method == "GET" else None
